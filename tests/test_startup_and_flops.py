"""Start-up phases add up to the time to the first step; FLOPs come from the compiled step."""

import keras

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


def test_a_step_compiled_for_a_gpu_counts_as_on_a_cpu():
  # XLA's GPU backend turns the dot and the convolution above into cuBLAS and cuDNN calls, each
  # returning a tuple with its workspace, the convolution in NCHW; the count must not change.
  gemm_config = ('{"operation_queue_id":"0","wait_on_operation_queues":[],"gemm_backend_config":'
                 '{"alpha_real":1,"beta":0,"dot_dimension_numbers":{"lhs_contracting_dimensions":'
                 '["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],'
                 '"rhs_batch_dimensions":[]},"alpha_imag":0,"epilogue":"DEFAULT"}}')
  conv_config = ('{"operation_queue_id":"0","cudnn_conv_backend_config":{"conv_result_scale":1,'
                 '"activation_mode":"kNone","side_input_scale":0}}')
  hlo = f"""
  %p0 = f32[32,784]{{1,0}} parameter(0)
  %p1 = f32[784,256]{{1,0}} parameter(1)
  %custom-call.1 = (f32[32,256]{{1,0}}, s8[4194304]{{0}}) custom-call(%p0, %p1), \
custom_call_target="__cublas$gemm", metadata={{op_type="MatMul"}}, backend_config={gemm_config}
  %get-tuple-element.1 = f32[32,256]{{1,0}} get-tuple-element(%custom-call.1), index=0
  %img = f32[8,1,28,28]{{3,2,1,0}} parameter(2)
  %k = f32[32,1,3,3]{{3,2,1,0}} parameter(3)
  %custom-call.2 = (f32[8,32,28,28]{{3,2,1,0}}, u8[0]{{0}}) custom-call(%img, %k), \
window={{size=3x3 pad=1_1x1_1}}, dim_labels=bf01_oi01->bf01, \
custom_call_target="__cudnn$convForward", backend_config={conv_config}
  %grad_out = f32[8,32,28,28]{{3,2,1,0}} parameter(4)
  %custom-call.3 = (f32[32,1,3,3]{{3,2,1,0}}, u8[0]{{0}}) custom-call(%img, %grad_out), \
window={{size=3x3 pad=1_1x1_1}}, dim_labels=bf01_oi01->bf01, \
custom_call_target="__cudnn$convBackwardFilter", backend_config={conv_config}
  %custom-call.4 = (f32[8,1,28,28]{{3,2,1,0}}, u8[0]{{0}}) custom-call(%grad_out, %k), \
window={{size=3x3 pad=1_1x1_1}}, dim_labels=bf01_oi01->bf01, \
custom_call_target="__cudnn$convBackwardInput", backend_config={conv_config}
  %sort = (f32[32]{{0}}, s32[32]{{0}}) custom-call(%p0), custom_call_target="__cub$DeviceRadixSort"
  """
  convolution = 2 * (8 * 28 * 28 * 32) * 9
  assert flops.count_hlo_flops(hlo) == 2 * 32 * 256 * 784 + 3 * convolution


def test_the_mlp_step_costs_what_its_layers_do_without_the_first_input_gradient():
  # Forward and two gradients of each layer, except the input gradient of the first, which XLA
  # removes: 2 x (784 x 256 x 2 + 256 x 10 x 3) FLOPs per example.
  model = simple.build_model("functional", network="mlp")
  assert flops.train_step_flops(model, False, (28, 28, 1), 16) == 16 * 818_176


def test_only_what_the_result_depends_on_counts_in_both_backends_text():
  # TensorFlow writes names with a `%`, JAX's lowered text without; the dot nothing uses (an
  # input gradient no one asked for) is not arithmetic the step does once XLA has optimised it.
  tensorflow_text = """
HloModule step

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(f32[] %x, f32[] %y)
}

ENTRY %main (p0: f32[32,784], p1: f32[784,256]) -> (f32[784,256]) {
  %p0 = f32[32,784]{1,0} parameter(0)
  %p1 = f32[784,256]{1,0} parameter(1)
  %used = f32[784,256]{1,0} dot(f32[32,784]{1,0} %p0, f32[32,784]{1,0} %p0), \
lhs_contracting_dims={0}, rhs_contracting_dims={0}
  %unused = f32[32,256]{1,0} dot(f32[32,784]{1,0} %p0, f32[784,256]{1,0} %p1), \
lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %zero = f32[] constant(0)
  %reduced = f32[784]{0} reduce(%used, %zero), dimensions={1}, to_apply=%add
  ROOT %out = (f32[784,256]{1,0}) tuple(f32[784,256]{1,0} %used)
}
"""
  used = 2 * 784 * 256 * 32
  assert flops.count_hlo_flops(tensorflow_text) == used
  assert flops.count_hlo_flops(tensorflow_text.replace("%", "")) == used


def test_a_strided_convolutions_gradients_cost_what_the_convolution_does():
  # XLA writes a strided convolution's input gradient as a convolution over the gradient
  # dilated by the stride (lhs_dilate); the holes are not multiplied. Two strided
  # convolutions: forward, the weights' gradients, and the second's input gradient.
  model = keras.Sequential([
      keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, strides=2, padding="same"),
      keras.layers.Conv2D(16, 3, strides=2, padding="same"), keras.layers.Flatten(),
      keras.layers.Dense(10)])
  first = 2 * 8 * 8 * 8 * 3 * 3 * 3  # Output 8x8x8, a 3x3x3 window, per example.
  second = 2 * 4 * 4 * 16 * 3 * 3 * 8
  dense = 2 * 4 * 4 * 16 * 10
  per_example = 3 * (first + second + dense) - first
  assert flops.train_step_flops(model, True, (16, 16, 3), 4) == 4 * per_example
