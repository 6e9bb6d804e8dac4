"""Pure: a gate evaluation as a Markdown report and as JUnit XML (one test case per segment,
plus one for the overall test) for CI systems."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from shadoweval.gate.evaluation import GateEvaluation, JudgedPair
from shadoweval.stats.noninferiority import NonInferiority

EXCERPT_CHARS = 600


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _verdict(test: NonInferiority) -> str:
    return "✅ pass" if test.passed else "❌ FAIL"


def _fenced(text: str) -> str:
    cut = text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + " […]"
    longest = max((len(run) for run in re.findall(r"`+", cut)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{cut}\n{fence}"


def _row(name: str, n: int, test: NonInferiority, errors: int | str) -> str:
    return (
        f"| {name} | {n} | {test.wins} | {test.ties} | {test.losses} | {errors} "
        f"| {_number(test.drop, signed=True)} | {_number(test.upper_bound)} "
        f"| {test.margin:.3f} | {_verdict(test)} |"
    )


def render_markdown(evaluation: GateEvaluation) -> str:
    e = evaluation
    confidence = f"{100 * (1 - e.alpha):g} %"
    headline = "PASSED" if e.passed else "FAILED"
    lines = [
        f"# Release gate {headline}: `{e.candidate_model}` replacing `{e.replaced_model}` "
        f"on router `{e.router}`",
        "",
        f"Margin (max drop) {e.max_drop:.3f} · α = {e.alpha:g}, one-sided · "
        f"{e.items_total} requests replayed, {e.items_error} not judged (errors) · "
        f"cost {e.cost_usd:.4f} USD",
        "",
        "Drop = P(the replaced model's answer wins in both judge orders) − P(the candidate's "
        "answer wins in both); ties and orders that disagree count for neither. A segment "
        f"passes when the one-sided {confidence} upper bound of its drop (Tango's score "
        "bound) is below the margin; the gate passes when every segment and the overall "
        "test (segments weighted by their traffic) pass.",
        "",
        f"| segment | n | candidate wins | ties | replaced wins | errors | drop "
        f"| {confidence} upper bound | margin | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for segment in e.segments:
        lines.append(
            _row(f"`{_cell(segment.segment)}`", segment.test.n, segment.test, segment.errors)
        )
    lines.append(_row("**overall** (traffic-weighted)", e.overall.n, e.overall, e.items_error))
    lines.append("")
    failing = e.failing_segments
    if failing:
        lines.append("**Failing segments:**")
        lines.append("")
        for segment in e.segments:
            if not segment.test.passed:
                lines.append(f"- `{segment.segment}`: {segment.test.reason}")
        lines.append("")
    if not e.overall.passed:
        lines.append(f"**Overall:** {e.overall.reason}")
        lines.append("")
    lines.append("## Worst examples")
    lines.append("")
    if not e.worst_examples:
        lines.append("No request where the replaced model's answer won in both orders.")
    for number, example in enumerate(e.worst_examples, start=1):
        lines.extend(_example(number, example, e))
    return "\n".join(lines).rstrip() + "\n"


def _example(number: int, example: JudgedPair, e: GateEvaluation) -> list[str]:
    scores = ""
    if example.score_candidate is not None and example.score_replaced is not None:
        scores = (
            f" — judge scores: candidate {example.score_candidate:g}, "
            f"replaced {example.score_replaced:g} (of 10)"
        )
    lines = [
        f"### {number}. segment `{example.segment}`, request `{example.request_id}`{scores}",
        "",
        "Request:",
        "",
        _fenced(example.request_text),
        "",
        f"Candidate `{e.candidate_model}`:",
        "",
        _fenced(example.candidate_answer),
        "",
        f"Replaced `{e.replaced_model}`:",
        "",
        _fenced(example.replaced_answer),
        "",
    ]
    if example.rationale:
        lines.extend([f"Judge: {example.rationale}", ""])
    return lines


def render_error_markdown(
    *, router: str, candidate_model: str, replaced_model: str, error: str
) -> str:
    return (
        f"# Release gate ERROR: `{candidate_model}` replacing `{replaced_model}` on router "
        f"`{router}`\n\nThe gate could not reach a verdict: {error}\n"
    )


def _failure_text(test: NonInferiority) -> str:
    return (
        f"n={test.n} candidate_wins={test.wins} ties={test.ties} replaced_wins={test.losses} "
        f"drop={_number(test.drop, signed=True)} upper_bound={_number(test.upper_bound)} "
        f"margin={test.margin:.3f} alpha={test.alpha:g} "
        f"z={_number(test.z)} p={_number(test.p_value)}"
    )


def _suite(name: str, evaluation_props: dict[str, str]) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("testsuites", name="shadoweval gate")
    suite = ET.SubElement(root, "testsuite", name=name)
    properties = ET.SubElement(suite, "properties")
    for key, value in evaluation_props.items():
        ET.SubElement(properties, "property", name=key, value=value)
    return root, suite


def _serialise(root: ET.Element) -> str:
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def render_junit(evaluation: GateEvaluation) -> str:
    """JUnit XML: a test case per segment and `overall`; failures carry the numbers."""
    e = evaluation
    classname = f"shadoweval.gate.{e.router}"
    root, suite = _suite(
        f"gate {e.router}: {e.candidate_model} replacing {e.replaced_model}",
        {
            "router": e.router,
            "candidate": e.candidate_model,
            "replace": e.replaced_model,
            "max_drop": f"{e.max_drop:g}",
            "alpha": f"{e.alpha:g}",
            "cost_usd": f"{e.cost_usd:.6f}",
        },
    )
    cases = [(f"segment {s.segment}", s.test) for s in e.segments]
    cases.append(("overall", e.overall))
    failures = 0
    for name, test in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        if not test.passed:
            failures += 1
            failure = ET.SubElement(
                case, "failure", message=test.reason, type="NonInferiorityNotShown"
            )
            failure.text = _failure_text(test)
        else:
            ET.SubElement(case, "system-out").text = _failure_text(test)
    for element in (root, suite):
        element.set("tests", str(len(cases)))
        element.set("failures", str(failures))
        element.set("errors", "0")
    return _serialise(root)


def render_error_junit(
    *, router: str, candidate_model: str, replaced_model: str, error: str
) -> str:
    """A single test case in error: CI shows the gate broke, not that the model failed."""
    root, suite = _suite(
        f"gate {router}: {candidate_model} replacing {replaced_model}",
        {"router": router, "candidate": candidate_model, "replace": replaced_model},
    )
    case = ET.SubElement(
        suite, "testcase", classname=f"shadoweval.gate.{router}", name="gate", time="0"
    )
    ET.SubElement(case, "error", message=error, type="GateError").text = error
    for element in (root, suite):
        element.set("tests", "1")
        element.set("failures", "0")
        element.set("errors", "1")
    return _serialise(root)
