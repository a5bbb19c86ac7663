"""Job scripts: sbatch-compatible directive parsing, the submit policy, its checks, the wrapper.

Shared because the validator service, the CLI, the runner and the launcher all read job scripts.
"""

from shared.jobscript.parsing import K8sDirective, Option, ParsedScript, parse_script
from shared.jobscript.policy import Policy, load_policy, parse_policy, policy_path
from shared.jobscript.validation import Verdict, check_script, format_problem, uses_k8s
from shared.jobscript.wrapping import extract_original_script, wrap_script

__all__ = [
    "K8sDirective",
    "Option",
    "ParsedScript",
    "Policy",
    "Verdict",
    "check_script",
    "extract_original_script",
    "format_problem",
    "load_policy",
    "parse_policy",
    "parse_script",
    "policy_path",
    "uses_k8s",
    "wrap_script",
]
