"""Start-up phases add up to the time to the first step; FLOPs come from the compiled step."""

from trainer.bench import flops
from trainer.loop import startup
from trainer.models import simple


def test_startup_phases_add_up_to_the_time_to_first_step():
  times = iter([10.5, 10.6, 11.0, 11.25])
  clock = startup.StartupClock(process_start=8.0, clock=lambda: next(times))
  for phase in ("imports", "runtime", "data", "model"):
    clock.mark(phase)
  phases = clock.phases(time_to_first_step_s=4.0)
  assert list(phases) == list(startup.PHASES)
  assert phases == {"imports": 2.5, "runtime": 0.1, "data": 0.4, "model": 0.25,
                    "first_step": 0.75}
  assert clock.phases(None)["first_step"] is None  # A process that trained no step.


def test_hlo_flops_count_dots_and_convolutions_by_their_shapes():
  hlo = """
  %p0 = f32[32,784]{1,0} parameter(0)
  %p1 = f32[784,256]{1,0} parameter(1)
  %dot.1 = f32[32,256]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %img = f32[8,28,28,1]{3,2,1,0} parameter(2)
  %k = f32[3,3,1,32]{3,2,1,0} parameter(3)
  %conv = f32[8,28,28,32]{3,2,1,0} convolution(%img, %k), window={size=3x3 pad=1_1x1_1}, \
dim_labels=b01f_01io->b01f
  %add = f32[32,256]{1,0} add(%dot.1, %dot.1)
  """
  assert flops.count_hlo_flops(hlo) == 2 * 32 * 256 * 784 + 2 * (8 * 28 * 28 * 32) * 9


def test_the_mlp_step_costs_what_its_layers_do_without_the_first_input_gradient():
  # Forward and two gradients of each layer, except the input gradient of the first, which XLA
  # removes: 2 x (784 x 256 x 2 + 256 x 10 x 3) FLOPs per example.
  model = simple.build_model("functional", network="mlp")
  assert flops.train_step_flops(model, False, (28, 28, 1), 16) == 16 * 818_176
