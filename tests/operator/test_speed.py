"""spec.speed: passed to the runtime as its settings; what cannot work is refused (FitsGPU False, an Event)."""

from __future__ import annotations

from typing import Any

import pytest

from imagefleet.catalog import load_gpu_classes
from imagefleet.fit import UNSUPPORTED_SPEED_OPTION, Fit, check_fit
from imagefleet.crd.models import ImageModelDeploymentSpec
from imagefleet.reconcile import Config, Observed, plan
from imagefleet.resolve import resolve

from .test_builders import _deployment, _env
from .test_plan import _condition, _imd

CLASSES = load_gpu_classes()
SPEED_ENV = {"IMAGEFLEET_CHANNELS_LAST", "IMAGEFLEET_FUSE_QKV", "IMAGEFLEET_TF32", "IMAGEFLEET_COMPILE",
             "IMAGEFLEET_COMPILE_SIZES"}


def test_speed_options_become_the_runtime_settings() -> None:
    env = _env(_deployment(speed={"channelsLast": True, "fuseQKV": True, "compile": True,
                                  "compileSizes": ["768x1024", "1024x768"]}))
    assert env["IMAGEFLEET_CHANNELS_LAST"] == env["IMAGEFLEET_FUSE_QKV"] == env["IMAGEFLEET_COMPILE"] == "true"
    assert env["IMAGEFLEET_COMPILE_SIZES"] == "768x1024,1024x768"
    assert "IMAGEFLEET_TF32" not in env
    tf32 = _env(_deployment(precision="fp32", speed={"tf32": True}))
    assert tf32["IMAGEFLEET_TF32"] == "true" and tf32["IMAGEFLEET_PRECISION"] == "fp32"


def test_without_speed_the_pod_template_is_unchanged() -> None:
    """An operator upgrade must not roll out every resource that does not use the options."""
    assert not SPEED_ENV & set(_env(_deployment()))
    assert not SPEED_ENV & set(_env(_deployment(speed={})))


def _fit(**spec: Any) -> Fit:
    return check_fit(resolve(ImageModelDeploymentSpec.model_validate(spec), CLASSES), CLASSES)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        # precision left out: sdxl's preferred fp16, which the CRD cannot see
        ({"model": {"name": "sdxl"}, "gpuClass": "h100-80gb", "speed": {"tf32": True}},
         "spec.speed.tf32 needs fp32, and the replicas run fp16 (the model's preferred precision"),
        ({"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32", "speed": {"tf32": True}},
         "spec.speed.tf32 needs a CUDA GPU and cpu runs on cpu"),
        # sd15's largest size is 768x768 unless spec.generation raises it
        ({"model": {"name": "sd15"}, "gpuClass": "h100-80gb", "speed": {"compile": True,
                                                                       "compileSizes": ["512x512", "1024x768"]}},
         "spec.speed.compileSizes: 1024x768 is above the largest size 768x768"),
        ({"model": {"name": "sd15"}, "gpuClass": "h100-80gb", "speed": {"compile": True, "compileSizes": ["516x512"]}},
         "spec.speed.compileSizes: 516x512 is not a multiple of 8"),
    ],
)
def test_options_that_cannot_work_do_not_fit(spec: dict[str, Any], words: str) -> None:
    fit = _fit(**spec)
    assert (fit.status, fit.reason) == ("False", UNSUPPORTED_SPEED_OPTION) and not fit.fits
    assert words in fit.message


def test_options_that_can_work_fit() -> None:
    assert _fit(model={"name": "sd15"}, gpuClass="h100-80gb", precision="fp32", speed={"tf32": True}).fits
    raised = _fit(model={"name": "sd15"}, gpuClass="h100-80gb", generation={"maxWidth": 1024},
                  speed={"compile": True, "compileSizes": ["1024x768"]})
    assert raised.reason == "Fits"


def test_a_refused_option_gets_no_deployment_a_condition_and_a_warning() -> None:
    config = Config(gpu_classes=CLASSES, runtime_image="runtime:test")
    spec = {"model": {"name": "tiny"}, "gpuClass": "cpu", "precision": "fp32", "speed": {"tf32": True}}
    first = plan(Observed(_imd(spec), None, None), config, timestamp="T0")
    assert first.deployment.action == "none" and first.status is not None
    fits = _condition(first.status, "FitsGPU")
    assert (fits["status"], fits["reason"]) == ("False", UNSUPPORTED_SPEED_OPTION)
    assert _condition(first.status, "Ready")["reason"] == "DoesNotFit"
    assert [(e.type, e.reason) for e in first.events] == [("Warning", UNSUPPORTED_SPEED_OPTION)]
