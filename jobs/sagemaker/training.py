"""`htr sagemaker train`: a PyTorch training job running jobs/train.py (script mode).

The job's source_dir is the project's code (batch.packaging.stage_code); channels `train`, `test`
and, for fine-tuning, `init` (a model.tar.gz or folder on S3) arrive as SM_CHANNEL_*; with
`--init default` the shipped models travel in the source_dir instead. Multi-GPU instances (or
several instances) get torch_distributed: torchrun with one process per GPU.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.sagemaker.session import FRAMEWORK_VERSION, PY_VERSION, LaunchError
from jobs.sagemaker.validation import Security, check_instance_type

TRAIN_ENTRY_POINT = "jobs/train.py"
CONTAINER_CODE_DIR = "/opt/ml/code"  # where the training toolkit unpacks source_dir
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
DEFAULT_INIT = "default"  # --init default: fine-tune the shipped models
MODEL_KINDS = ("segmenter", "recogniser")
DEFAULT_MAX_RUN_S = 24 * 3600

# CloudWatch metrics scraped from the training log. jobs/train.py prints key=value lines (its
# _log): "step=120 train_loss=0.53 lr=0.001 sec_per_step=0.8", "step=7000 test_cer=0.2447
# test_wer=0.6687", "step=500 test_precision=0.9 test_recall=0.92 test_f1=0.91". Numbers are
# written with %.4g, so they may be in exponent form (5.3e-05).
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_NAMES = (
    "train_loss",
    "lr",
    "sec_per_step",
    "test_cer",
    "test_wer",
    "test_f1",
    "test_precision",
    "test_recall",
)
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": rf"(?:^|\s){name}={_NUMBER}"} for name in METRIC_NAMES
]

# GPUs per instance for the multi-GPU types (one-GPU p*/g* types are not listed).
MULTI_GPU_INSTANCES: dict[str, int] = {
    "ml.p3.8xlarge": 4,
    "ml.p3.16xlarge": 8,
    "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8,
    "ml.p4de.24xlarge": 8,
    "ml.p5.48xlarge": 8,
    "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8,
    "ml.g4dn.12xlarge": 4,
    "ml.g4dn.metal": 8,
    "ml.g5.12xlarge": 4,
    "ml.g5.24xlarge": 4,
    "ml.g5.48xlarge": 8,
    "ml.g6.12xlarge": 4,
    "ml.g6.24xlarge": 4,
    "ml.g6.48xlarge": 8,
    "ml.g6e.12xlarge": 4,
    "ml.g6e.24xlarge": 4,
    "ml.g6e.48xlarge": 8,
}


@dataclass
class TrainSpec:
    model: str
    train: str
    role: str
    instance_type: str
    test: str | None = None
    instance_count: int = 1
    hyperparameters: dict[str, str] = field(default_factory=dict)
    spot: bool = False
    max_wait: int | None = None
    max_run: int | None = None
    checkpoint_s3_uri: str | None = None
    output_path: str | None = None
    code_location: str | None = None
    image_uri: str | None = None
    job_name: str | None = None
    volume_size_gb: int = 30
    init: str | None = None  # s3:// model (an `init` channel), or "default"
    security: Security = field(default_factory=Security)
    wait: bool = True


def gpus_per_instance(instance_type: str) -> int:
    from sagemaker.fw_utils import _is_gpu_instance

    if instance_type in MULTI_GPU_INSTANCES:
        return MULTI_GPU_INSTANCES[instance_type]
    return 1 if _is_gpu_instance(instance_type) else 0


def distribution_for(instance_type: str, instance_count: int) -> dict[str, Any] | None:
    """torchrun across every GPU of every instance, when there is more than one GPU."""
    gpus = gpus_per_instance(instance_type)
    if instance_count == 1 and gpus <= 1:
        return None
    if gpus == 0:
        raise LaunchError(
            f"{instance_count} x {instance_type}: distributed training needs GPU "
            "instances (ml.g*/ml.p*); use --instance-count 1 on CPU"
        )
    return {"torch_distributed": {"enabled": True}}


def stopping_times(spec: TrainSpec) -> tuple[int, int | None]:
    """(max_run, max_wait): spot jobs must wait at least as long as they may run."""
    max_run = spec.max_run or min(DEFAULT_MAX_RUN_S, spec.max_wait or DEFAULT_MAX_RUN_S)
    if not spec.spot:
        if spec.max_wait:
            raise LaunchError("--max-wait only applies to --spot training")
        return max_run, None
    max_wait = spec.max_wait or max_run
    if max_wait < max_run:
        raise LaunchError(f"--max-wait {max_wait}s is shorter than --max-run {max_run}s")
    return max_run, max_wait


def training_hyperparameters(spec: TrainSpec) -> dict[str, str]:
    """Passed to jobs/train.py as `--key value`; the channels arrive as SM_CHANNEL_* paths."""
    hp = {"model": spec.model, **spec.hyperparameters}
    if spec.checkpoint_s3_uri:
        hp.setdefault("checkpoint-dir", CHECKPOINT_LOCAL_PATH)
    if spec.init == DEFAULT_INIT:  # staged into the source_dir (stage_code(default_models=True))
        hp["init"] = f"{CONTAINER_CODE_DIR}/models/default"
    return hp


def training_channels(spec: TrainSpec) -> dict[str, str]:
    """S3 prefixes the job downloads: train, test, and init (a model to fine-tune) if on S3."""
    channels = {"train": spec.train, **({"test": spec.test} if spec.test else {})}
    if spec.init and spec.init != DEFAULT_INIT:
        if not spec.init.startswith("s3://"):
            raise LaunchError(f"--init {spec.init!r}: an s3:// model.tar.gz or folder, or 'default'")
        channels["init"] = spec.init
    return channels


def check_training(spec: TrainSpec) -> None:
    if spec.model not in MODEL_KINDS:
        raise LaunchError(f"model must be one of {', '.join(MODEL_KINDS)}")
    check_instance_type("training", spec.instance_type)
    stopping_times(spec)
    distribution_for(spec.instance_type, spec.instance_count)
    training_channels(spec)


def build_estimator(spec: TrainSpec, session, source_dir: Path):
    from sagemaker.pytorch import PyTorch

    check_training(spec)
    max_run, max_wait = stopping_times(spec)
    kwargs: dict[str, Any] = {}
    if spec.checkpoint_s3_uri:
        kwargs.update(checkpoint_s3_uri=spec.checkpoint_s3_uri, checkpoint_local_path=CHECKPOINT_LOCAL_PATH)
    distribution = distribution_for(spec.instance_type, spec.instance_count)
    if distribution:
        kwargs["distribution"] = distribution
    return PyTorch(
        entry_point=TRAIN_ENTRY_POINT,
        source_dir=str(source_dir),
        role=spec.role,
        framework_version=FRAMEWORK_VERSION,
        py_version=PY_VERSION,
        image_uri=spec.image_uri,
        instance_type=spec.instance_type,
        instance_count=spec.instance_count,
        hyperparameters=dict[str, Any](training_hyperparameters(spec)),  # SDK: values str | PipelineVariable
        metric_definitions=METRIC_DEFINITIONS,
        use_spot_instances=spec.spot,
        max_run=max_run,
        max_wait=max_wait,
        output_path=spec.output_path,
        code_location=spec.code_location,
        volume_size=spec.volume_size_gb,
        sagemaker_session=session,
        disable_profiler=True,
        debugger_hook_config=False,  # no extra rule jobs or S3 output
        # the training toolkit runs `python jobs/train.py`: let it import batch/, models/, ...
        environment={"PYTHONPATH": CONTAINER_CODE_DIR},
        output_kms_key=spec.security.output_kms_key,
        volume_kms_key=spec.security.volume_kms_key,
        subnets=spec.security.subnets or None,
        security_group_ids=spec.security.security_group_ids or None,
        tags=spec.security.tag_list,
        base_job_name=f"htr-{spec.model}",
        **kwargs,
    )


def launch_training(spec: TrainSpec, session) -> Any:
    """Stage the code, create the training job; returns the estimator."""
    from batch.packaging import stage_code

    channels = training_channels(spec)
    with tempfile.TemporaryDirectory(prefix="htr-source-") as tmp:
        source_dir = stage_code(Path(tmp) / "source", default_models=spec.init == DEFAULT_INIT)
        estimator = build_estimator(spec, session, source_dir)
        estimator.fit(channels, wait=False, logs="None", job_name=spec.job_name)
    return estimator
