"""Only for vLLM's CPU build in `.venv-vllm`, which has no torchvision (bench/vllm_ray_actor.py
--vlm): transformers' multimodal modules import torchvision at module level, which the stand-in
package beside this file satisfies, and this tells transformers that torchvision is absent, so
image processors take their PIL backend. Put this folder first on PYTHONPATH to use it; every
process started with it (Ray's workers too) runs this at startup. Never part of r1v itself."""

try:
    import transformers.utils as _utils
    import transformers.utils.import_utils as _import_utils
except ImportError:  # no transformers: nothing to tell
    pass
else:

    def _no_torchvision() -> bool:
        return False

    _import_utils.is_torchvision_available = _no_torchvision
    _utils.is_torchvision_available = _no_torchvision
