"""Guards the public API from silent removal, and the optional-dependency error."""

from __future__ import annotations

import importlib

import pytest

from tracemark._optional import require
from tracemark.errors import MissingExtraError, TracemarkError

PUBLIC = {
    "tracemark": ["TracemarkError", "__version__"],
    "tracemark.errors": [
        "TracemarkError", "ImageError", "EmptyImageError", "CorruptImageError",
        "UnsupportedImageError", "ImageTooLargeError", "ImageTooSmallError", "ImageSourceError",
        "AttackError", "UnknownAttackError", "AttackParameterError", "SuiteError",
        "UnknownSuiteError", "MetricError", "MissingExtraError", "ConfigError",
    ],
    "tracemark.imageio": ["load_image", "save_image", "encode_image", "to_pil", "open_image_info",
                          "DEFAULT_MAX_PIXELS"],
    "tracemark.attacks": [
        "AttackSpec", "AttackRecord", "Family", "Param", "SampleContext", "Suite", "SuiteEntry",
        "apply_attack", "attack_names", "draw_params", "get_attack", "get_suite", "list_attacks",
        "list_suites", "load_suite", "register_attack", "resolve_random", "suite_from_dict",
    ],
    "tracemark.index": ["Index", "VectorSpec", "NewReference", "Reference", "AddResult", "Hit",
                        "FORMAT_VERSION", "IndexFormatError", "IndexExistsError"],
    "tracemark.watermark": ["get_method", "list_methods", "register_method", "Detection",
                            "WatermarkMethod", "payload_to_bits"],
    "tracemark.credentials": [
        "CredentialStore", "ManifestRecord", "SignOptions", "SignResult", "sign_image",
        "sign_many", "VerifyOptions", "VerifyResult", "verify_image", "verify_many",
        "init_dev_ca", "load_signing_credentials", "load_trust_anchors", "SigningCredentials",
        "load_signing_certificate", "load_allowed_list", "load_trust_config", "CommandSigner",
        "ManifestDefinition", "load_definition", "parse_definition",
    ],
    "tracemark.guard": [
        "Concept", "ConceptKind", "ConceptMatch", "ConceptRegistry", "Evidence", "Guard",
        "GuardCalibration", "Prompt", "PromptScreening", "PromptSet", "concept_id",
        "DEFAULT_ALPHA",
    ],
    "tracemark.guard.matchers": ["Matcher", "MATCHERS", "register_matcher", "matcher_class"],
    "tracemark.guard.syntax": ["parse_prompt"],
    "tracemark.guard.mitigate": ["mitigate", "generic_for"],
    "tracemark.metrics": [
        "psnr", "ssim", "bit_accuracy", "roc_curve", "auroc", "tpr_at_fpr",
        "micro_average_precision", "recall_at_precision", "accuracy_at_rank1",
        "scores_by_label", "threshold_for_fpr",
    ],
    "tracemark.fingerprint": [
        "Fingerprint", "Fingerprinter", "get_fingerprinter", "list_fingerprinters",
        "hamming_distance", "ahash", "dhash", "phash", "whash", "pdq_hash", "pdq_dihedral",
        "pdq_match_distance", "extract", "verify",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost public names: {missing}"


def test_every_error_derives_from_the_base() -> None:
    import tracemark.errors as e

    for name in e.__all__:
        assert issubclass(getattr(e, name), TracemarkError)


def test_missing_extra_names_the_install_command() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'tracemark\[peers\]'"):
        require("tracemark_no_such_module_xyz", "peers", purpose="a test")
    assert require("json", "none").dumps([]) == "[]"


def test_core_import_does_not_pull_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = ("import sys, tracemark, tracemark.attacks, tracemark.metrics, tracemark.imageio, tracemark.cli;"
            "bad=[m for m in ('torch','tensorflow','sklearn','onnxruntime') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
