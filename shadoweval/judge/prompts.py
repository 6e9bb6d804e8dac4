"""The judge prompt: a fixed, cacheable instruction prefix and the per-pair user turn.

Adapted from FastChat's `pair-v2` (Zheng et al. 2023, arXiv:2306.05685): an
impartial judge, told to ignore position, length and names, returning a
structured verdict. The prompt is versioned by hash: any change to the
instructions, the rubric, the template or the schema changes `prompt_hash`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from shadoweval.judge.parsing import VERDICT_SCHEMA

TEMPLATE_VERSION = "pair-v1"

JUDGE_INSTRUCTIONS = """\
You are an impartial judge comparing two AI assistants' answers to the same user request.

Decide which answer better serves the user. {rubric}

Rules:
- Judge the answers only. Do not let their order, their length, or any names influence you.
- A longer answer is not better unless the extra content helps the user.
- If both answers are equally good, or equally bad, the verdict is "tie".
- Give each answer a score from 1 (useless) to 10 (excellent).
- Explain your verdict in at most three sentences, then record it with the tool/schema given.
"""

DEFAULT_RUBRIC = (
    "Weigh correctness first, then whether it fully answers the request, then clarity and "
    "relevance. A factual or reasoning error outweighs style."
)

USER_TEMPLATE = """\
[The Start of the Conversation]
{conversation}
[The End of the Conversation]

[The Start of Assistant A's Answer]
{answer_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{answer_b}
[The End of Assistant B's Answer]
"""

TRUNCATION_MARK = "[… earlier content cut to fit the judge's budget …]\n"


@dataclass(frozen=True)
class JudgePrompt:
    system: str
    prompt_hash: str


def build_judge_prompt(rubric: str | None = None) -> JudgePrompt:
    """The fixed instructions (the cacheable prefix) and their version hash."""
    system = JUDGE_INSTRUCTIONS.format(rubric=rubric or DEFAULT_RUBRIC)
    material = json.dumps(
        {
            "template": TEMPLATE_VERSION,
            "system": system,
            "user": USER_TEMPLATE,
            "schema": VERDICT_SCHEMA,
        },
        sort_keys=True,
    )
    return JudgePrompt(
        system=system, prompt_hash=hashlib.sha256(material.encode()).hexdigest()[:16]
    )


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'content')} block]")
        return "\n".join(parts)
    return "" if content is None else str(content)


def render_conversation(
    messages: list[dict[str, Any]], system: str | list[dict[str, Any]] | None = None
) -> str:
    lines = []
    if system:
        lines.append(f"[system]: {_content_text(system)}")
    for message in messages:
        lines.append(f"[{message.get('role', 'user')}]: {_content_text(message.get('content'))}")
    return "\n".join(lines)


def keep_end(text: str, budget: int) -> str:
    """Cut `text` to `budget` characters, keeping the end (the latest turns matter most)."""
    if len(text) <= budget:
        return text
    keep = max(0, budget - len(TRUNCATION_MARK))
    return TRUNCATION_MARK + text[len(text) - keep :]


def keep_start(text: str, budget: int) -> str:
    """Cut an answer to `budget` characters, keeping its beginning."""
    if len(text) <= budget:
        return text
    return text[:budget] + "\n[… answer cut to fit the judge's budget …]"


def build_user_turn(
    *,
    messages: list[dict[str, Any]],
    system: str | list[dict[str, Any]] | None,
    answer_a: str,
    answer_b: str,
    char_budget: int,
) -> str:
    """The per-pair user turn within `char_budget` characters.

    Each answer may take up to a quarter of the budget; the conversation gets
    the rest, cut from its start so the final request survives.
    """
    answer_budget = char_budget // 4
    a, b = keep_start(answer_a, answer_budget), keep_start(answer_b, answer_budget)
    conversation_budget = max(200, char_budget - len(a) - len(b) - len(USER_TEMPLATE))
    conversation = keep_end(render_conversation(messages, system), conversation_budget)
    return USER_TEMPLATE.format(conversation=conversation, answer_a=a, answer_b=b)
