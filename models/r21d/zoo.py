"""The model zoo: one frozen record per upstream weight file.

Everything that depends on the flavour (where its weights live, its window
size, its preprocessing constants and its labels) is read from here and from
nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from r21d_features.utils.core.errors import SettingsError


def kinetics400_labels() -> list[str]:
    """The 400 Kinetics class names in the order of the classifier's outputs."""
    from torchvision.models.video import R2Plus1D_18_Weights  # noqa: PLC0415 (torchvision loads with the model)

    return list(R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"])


@dataclass(frozen=True)
class Preprocessing:
    """Per-frame preprocessing constants (values in [0, 1] after /255; docs/reference/preprocessing.md)."""

    resize_hw: tuple[int, int] = (128, 171)
    crop_hw: tuple[int, int] = (112, 112)
    mean_rgb: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std_rgb: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)

    @property
    def crop_top_left(self) -> tuple[int, int]:
        """Top-left corner of the centre crop, as the reference rounds it."""
        (h, w), (ch, cw) = self.resize_hw, self.crop_hw
        return int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))


@dataclass(frozen=True)
class ModelRecord:
    """One pretrained flavour: architecture, weights file and defaults."""

    name: str
    architecture: str  # key of models.r21d.builders.ARCHITECTURES
    file_name: str  # upstream file name, also the name in the torch hub cache
    url: str
    sha256_prefix: str  # what torch.hub checks: the start of the file's SHA-256
    stack_size: int
    step_size: int
    num_classes: int
    feature_dim: int
    preprocessing: Preprocessing
    labels: Callable[[], list[str]]
    dataset: str


_IG65M_RELEASE = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0"


def _ig65m_kinetics(clip_frames: int, sha256_prefix: str) -> ModelRecord:
    """An IG65M-pretrained, Kinetics-fine-tuned R(2+1)D-34 of moabitcoin/ig65m-pytorch v1.0.0."""
    file_name = f"r2plus1d_34_clip{clip_frames}_ft_kinetics_from_ig65m-{sha256_prefix}.pth"
    return ModelRecord(
        name=f"r2plus1d_34_{clip_frames}_ig65m_ft_kinetics",
        architecture="r2plus1d_34",
        file_name=file_name,
        url=f"{_IG65M_RELEASE}/{file_name}",
        sha256_prefix=sha256_prefix,
        stack_size=clip_frames,
        step_size=clip_frames,
        num_classes=400,
        feature_dim=512,
        preprocessing=Preprocessing(),
        labels=kinetics400_labels,
        dataset="kinetics400",
    )


MODEL_ZOO: dict[str, ModelRecord] = {
    record.name: record
    for record in (
        ModelRecord(
            name="r2plus1d_18_16_kinetics",
            architecture="r2plus1d_18",
            file_name="r2plus1d_18-91a641e6.pth",
            url="https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth",
            sha256_prefix="91a641e6",
            stack_size=16,
            step_size=16,
            num_classes=400,
            feature_dim=512,
            preprocessing=Preprocessing(),
            labels=kinetics400_labels,
            dataset="kinetics400",
        ),
        _ig65m_kinetics(clip_frames=32, sha256_prefix="ade133f1"),
        _ig65m_kinetics(clip_frames=8, sha256_prefix="0aa0550b"),
    )
}


def get_record(model_name: str) -> ModelRecord:
    try:
        return MODEL_ZOO[model_name]
    except KeyError:
        allowed = ", ".join(MODEL_ZOO)
        raise SettingsError(f"model_name={model_name!r} is unknown; allowed: {allowed}") from None
