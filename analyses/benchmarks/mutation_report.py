"""Writes the mutation score (``results/mutation.json``) and the survivors' list (``results/mutation_survivors.md``)
from the state mutmut leaves in ``mutants/`` (run by ``make mutation`` after ``mutmut run``).

Every mutant of the first run that survived is listed in ``mutation_notes.yaml`` beside this file, with either the
test added to kill it (``killed: tests/...::test``) or why it cannot be killed (``equivalent: ...``). A survivor with
no note, or a note that says killed while mutmut still has it surviving, is listed as such and makes the script
exit 1, so the list cannot drift from the run.

    python analyses/benchmarks/mutation_report.py [--partial "what was left out"]
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

import yaml

from common import machine

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
NOTES = Path(__file__).resolve().parent / "mutation_notes.yaml"
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "caught by type check", None: "not checked",
          -11: "segfault", -9: "segfault"}


def module_of(mutant: str) -> str:
    """vitlens.analysis.rollout.x_fuse_heads__mutmut_3 -> vitlens.analysis.rollout"""
    return re.sub(r"\.(x[ΛǁΔ]?_|xǁ).*$", "", mutant.split("__mutmut_")[0]).rsplit(".x", 1)[0]


def diff_lines(mutant: str) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=ROOT, capture_output=True,
                         text=True).stdout
    minus = [l[1:].strip() for l in out.splitlines() if l.startswith("-") and not l.startswith("---")]
    plus = [l[1:].strip() for l in out.splitlines() if l.startswith("+") and not l.startswith("+++")]
    return " / ".join(minus), " / ".join(plus)


def killed_directly(mutant: str, test: str) -> bool:
    """Runs ``test`` in mutants/ with the mutant switched on (mutmut's MUTANT_UNDER_TEST): True when it fails there and
    passes with no mutant, for a test added after mutmut last ran that mutant."""
    def run(env: dict) -> int:
        import os
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
                              cwd=ROOT / "mutants", env={**os.environ, "PYTHONPATH": str(ROOT / "mutants"), **env},
                              capture_output=True).returncode
    return run({"MUTANT_UNDER_TEST": mutant}) == 1 and run({}) == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partial", default="", help="what the run left out (written into the results)")
    args = parser.parse_args()
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors, timeouts = [], []
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        for mutant, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = STATUS.get(code, "suspicious")
            counts[module_of(mutant)][status] += 1
            if status in ("survived", "no tests", "suspicious"):
                survivors.append(mutant)
            elif status == "timeout":
                timeouts.append(mutant)
    notes = yaml.safe_load(NOTES.read_text()) if NOTES.exists() else {}
    modules = {}
    for module, c in sorted(counts.items()):
        tested = sum(v for k, v in c.items() if k != "not checked")
        if not tested:
            continue
        caught = c["killed"] + c["timeout"] + c["caught by type check"]
        equivalent = sum(1 for m in survivors if module_of(m) == module and str(notes.get(m, "")).startswith("equiv"))
        modules[module] = dict(mutants=tested, killed=c["killed"], timeout=c["timeout"], survived=c["survived"],
                               no_tests=c["no tests"], suspicious=c["suspicious"], not_checked=c["not checked"],
                               equivalent=equivalent,
                               score=round(caught / tested, 4),
                               score_without_equivalent=round(caught / max(1, tested - equivalent), 4))
    total = Counter()
    for m in modules.values():
        total.update({k: v for k, v in m.items() if isinstance(v, int)})
    caught = total["killed"] + total["timeout"]
    summary = dict(total, score=round(caught / max(1, total["mutants"]), 4),
                   score_without_equivalent=round(caught / max(1, total["mutants"] - total["equivalent"]), 4))
    result = dict(
        what="mutmut over the science and the ViT's layers: killed (a test failed) or timeout count as caught; the "
             "score is caught / mutants; score_without_equivalent leaves the mutants explained as equivalent in "
             "mutation_survivors.md out of the denominator",
        partial=args.partial or None, machine=machine(), date=datetime.date.today().isoformat(),
        mutmut=version("mutmut"), total=summary, modules=modules)
    (RESULTS / "mutation.json").write_text(json.dumps(result, indent=1) + "\n")

    lines = ["# Surviving mutants", "",
             "Every mutant that survived the first `make mutation` run (see `mutation.json` for the scores), with "
             "the test written to kill it or why no test can. Written by `analyses/benchmarks/mutation_report.py` "
             "from `mutation_notes.yaml`.", ""]
    if args.partial:
        lines += [f"**Partial:** {args.partial}", ""]
    lines += ["\"now\" is mutmut's latest verdict. \"killed (run directly)\": the test was added after mutmut last ran "
              "that mutant; this script ran the test in mutants/ with the mutant switched on (it fails) and off (it "
              "passes). Such mutants still count as survived in `mutation.json`.", ""]
    lines += ["| mutant | original | mutated | now | why |", "| --- | --- | --- | --- | --- |"]
    problems = 0
    first_run = sorted(set(survivors) | {m for m in notes if module_of(m) in modules})
    for mutant in first_run:
        note = str(notes.get(mutant, ""))
        now = "survived" if mutant in survivors else "killed"
        if now == "survived" and note.startswith("killed: ") and killed_directly(mutant, note.split(": ", 1)[1]):
            now = "killed (run directly, see above)"
        elif not note or (now == "survived" and note.startswith("killed")) or (now == "killed" and
                                                                              note.startswith("equiv")):
            problems += 1
            note = f"**unexplained** {note}"
        before, after = diff_lines(mutant)
        cell = lambda s: "`" + s.replace("|", "\\|").replace("`", "'") + "`" if s else ""
        lines.append(f"| {mutant} | {cell(before)} | {cell(after)} | {now} | {note.replace('|', '/')} |")
    if timeouts:
        lines += ["", "Counted as caught because the tests did not finish (mutmut's timeout, or a test hung and was "
                  "stopped by hand after its stack showed it waiting forever):", ""]
        lines += [f"- {m}: `{diff_lines(m)[1]}`" for m in sorted(timeouts)]
    (RESULTS / "mutation_survivors.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary))
    if problems:
        print(f"{problems} survivors unexplained or misfiled", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
