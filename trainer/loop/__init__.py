"""The training loop: the task's compiled steps, the optimizer, the controller and what it
times, logs and stops on."""
