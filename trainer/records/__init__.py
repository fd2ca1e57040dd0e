"""What a run writes: its workdir, checkpoints, TensorBoard events, results.json and exports."""
