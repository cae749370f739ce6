"""The baselines' published forms: each prompt equals its authors' template filled in,
and SDFT's filter drops what the original drops. The templates below are copied from the
authors' sources (sail-sg/sdft main.py; Towards-On-Policy-SFT HintedDecoding/Run_HD_example.py)
and filled in the way their code fills them."""

from __future__ import annotations

import ast
import json
import warnings

import pytest

from dasd_local.decoding import baselines as P
from dasd_local.decoding.views import render_chat

# Run_HD_example.py's SHADOW_SYSTEM_PROMPT_QWEN2 and INPUTPROMPT as written in its source;
# Python reads them (escapes included) as literal_eval does.
HD_SHADOW_SOURCE = r'''"""
You will be provided with a question and a corresponding ground truth answer which is ensured to be correct.
Your job is to transform the answer to a detailed chain-of-thought (CoT) reasoning process that logically leads to the given answer.
Make sure the content in the CoT is closely matching with the ground truth answer.

Your output should contain a `# Analyze` part to analyze the given solution **line by line**, and then generate a `# CoT` part to provide a complete CoT.
You **MUST** analyze and check every details of the solution in the `# Anayze` first, to make sure fully understand of the problem.
You **MUST NOT** mention the provided answer in the CoT part, as the CoT of original problem does not know the ground truth.
Most importantly, the CoT should follow exactly the language style of your own thinking.
Here is an example:


Input:

# Question
What is the result of sum 1 to 10? please analyze step by step and put the result in \\boxed{}

# Answer:
we can use the formula Sn = (1+n)*n/2.
let n=10, we have:
Sn = (1+10)*10/2 = \\boxed{55}.


Output:

# Analyze

We need to find out how to come up with the idea in the provided answer, lets analyze the provided answer line by line first.

Let's check the first line of the solution, it used a fomula that the results of sum from 1 to N is Sn = (1+N) * N / 2.
This is well known as the Gauss formula and I think we can use it directly.
So when people see this problem, they should start with this formula.

Then the second and third line of the solution put n=10 into the formula and solve the problem.

Now I should transform the solution to my preferred format.

# CoT

To find the sum of the numbers from 1 to 10, we can use the formula for the sum of the first \( n \) natural numbers, which is given by:

\[
S = \\frac{n(n + 1)}{2}
\]

Here, \( n = 10 \). Let's substitute \( n \) into the formula and calculate step by step.

1. Substitute \( n = 10 \) into the formula:
   \[
   S = \frac{10(10 + 1)}{2}
   \]

2. Simplify the expression inside the parentheses:
   \[
   S = \\frac{10 \\times 11}{2}
   \]

3. Perform the multiplication:
   \[
   S = \\frac{110}{2}
   \]

4. Perform the division:
   \[
   S = 55
   \]

So, the sum of the numbers from 1 to 10 is \( 55 \).

\[
\\boxed{55}
\]
"""'''
HD_INPUT_SOURCE = r'''"""
# Question:
{question}

# Answer:
{answer}

# CoT:
"""'''

# sail-sg/sdft main.py (LLaMA-Factory slots; {{content}} is the query, {{resp}} the reference)
SDFT_GSM8K_DISTILL_SYSTEM = (
    "You are an expert in math. "
    "Below are a math question and its reference answer. "
    "Refer to the reference answer and write a response that appropriately answers the question."
)
SDFT_LLAMA3_DISTILL_USER = (
    "<|start_header_id|>user<|end_header_id|>\n\n{{content}}\n\n{{resp}}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
    "Great! Let's think step by step. "
)
SDFT_LLAMA3_SYSTEM = "<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>"  # after {"bos_token"}
SDFT_ALPACA_REFER = ("Below are an instruction that describes a task along with a reference answer. "
                     "Refer to the reference answer and write your own response.",
                     "### Instruction:\n{{content}}\n\n### Reference Answer:\n{{resp}}\n\n### Response:\n")
SDFT_ALPACA_USING_SYSTEM = ("Below are an instruction that describes a task along with a reference answer. "
                            "Using the reference answer as a guide, write your own response.")

# Meta's Llama 3 chat template, which the authors' llama3_* templates reproduce
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QUERY = "What is $1+2$?\n\nPlease put your final answer within \\boxed{}."
REFERENCE = "We add: $1+2=\\boxed{3}$."


def _slot(slot: str, content: str, resp: str = "") -> str:
    return slot.replace("{{content}}", content).replace("{{resp}}", resp)


def _source(literal: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the original source has invalid escapes such as \(
        return ast.literal_eval(literal)


def test_sdft_math_prompt_is_the_authors_llama3_gsm8k_distill():
    def render(messages):
        return render_chat(LLAMA3_TEMPLATE, messages, bos="<|begin_of_text|>")

    ours = P.sdft_reference_prompt("math", QUERY, REFERENCE, render)
    theirs = "<|begin_of_text|>" + _slot(SDFT_LLAMA3_SYSTEM, SDFT_GSM8K_DISTILL_SYSTEM) + \
        _slot(SDFT_LLAMA3_DISTILL_USER, QUERY, REFERENCE)
    assert ours == theirs


def test_sdft_code_and_mcq_prompts_are_the_authors_alpaca_distill_templates():
    system, user = SDFT_ALPACA_REFER
    assert P.sdft_reference_prompt("code", QUERY, REFERENCE, None) == system + _slot(user, QUERY, REFERENCE)
    assert P.sdft_reference_prompt("mcq", QUERY, REFERENCE, None) == SDFT_ALPACA_USING_SYSTEM + _slot(user, QUERY, REFERENCE)


@pytest.mark.parametrize("text, hit", [
    ("Following the reference answer, 3.", "reference answer"),
    ("  Your turn: what is 2+2?", "Your turn"),
    ("NOW IT'S YOUR TURN.", "now it's your turn"),
    ("In my response I add 1 and 2.", "my response"),
    ("We add 1 and 2 to get $\\boxed{3}$.", None),
    ("It is your turn now.", None),  # "Your turn" counts only at the start
])
def test_sdft_filter_drops_what_the_original_drops(text, hit):
    assert P.sdft_rejects(text) == hit


def test_hinted_shadow_prompt_is_the_authors_with_their_quirks():
    shadow, inp = _source(HD_SHADOW_SOURCE), _source(HD_INPUT_SOURCE)
    assert "\x0crac{10(10 + 1)}{2}" in shadow  # the original's one-backslash "\frac": a form feed
    ours = render_chat(CHATML, P.hinted_shadow_messages(QUERY, REFERENCE))
    theirs = render_chat(CHATML, [{"role": "system", "content": shadow},
                                  {"role": "user", "content": inp.format(question=QUERY, answer=REFERENCE)}])
    assert ours == theirs


def test_hinted_analysis_is_cut_at_the_last_cot_mark():
    text = "# Analyze\nline 1 ... # CoT is next\n# CoT\nTo find"
    assert P.hinted_analysis(text) == "# Analyze\nline 1 ... # CoT is next\n# CoT"
    assert P.hinted_analysis("# Analyze only") is None


def test_views_of_the_published_forms_through_the_real_chat_template(model_path):
    from dasd_local.decoding.engine import Engine, EngineConfig
    from dasd_local.decoding.views import ViewBuilder
    from dasd_local.tasks import Problem, get_task

    task = get_task("math")
    problem = Problem("p", "What is $1+2$?", REFERENCE)
    with Engine(model_path, EngineConfig(n_ctx=512, n_threads=1)) as engine:
        sdft = ViewBuilder(engine, task, published="self-distill").views(problem)
        hint = ViewBuilder(engine, task, published="hint").views(problem, analysis="# Analyze\nok\n# CoT")
        controlled = ViewBuilder(engine, task).views(problem)
        template = engine.chat_template()
        assert sdft.ref_tokens == engine.tokenize(sdft.ref_text)
    query = task.base_user(problem)
    assert sdft.base_text == hint.base_text == controlled.base_text  # the training prompt is unchanged
    assert sdft.ref_text == render_chat(template, [{"role": "system", "content": P.SDFT_MATH_SYSTEM},
                                                   {"role": "user", "content": f"{query}\n\n{REFERENCE}"}]) + \
        "Great! Let's think step by step. "
    assert hint.ref_text == render_chat(template, P.hinted_shadow_messages(query, REFERENCE)) + "# Analyze\nok\n# CoT"



# ---- the published forms through the real engine -------------------------------------------


@pytest.fixture(scope="module")
def short_problems(data_dir):
    from dasd_local.tasks import Problem, get_task

    task = get_task("math")
    rows = [json.loads(line) for line in (data_dir / "math" / "train.jsonl").read_text().splitlines()[:60]]
    rows = sorted(rows, key=lambda r: len(r["problem"]) + len(r["solution"]))[:3]
    return task, [Problem(r["unique_id"], r["problem"], r["solution"], task.keep(r)) for r in rows]


def _published_run(model_path, task, problems, **kw):
    from dasd_local.config import DecodeConfig, EngineOptions
    from dasd_local.decoding.session import DecodeSession

    cfg = DecodeConfig(baseline_form="published", max_new_tokens=12, **kw)
    with DecodeSession(EngineOptions(model=str(model_path), threads=1), task, cfg) as session:
        return list(session.run(problems))


def test_a_seeded_sampled_run_repeats_exactly(model_path, short_problems):
    """SDFT's published form samples (T 0.95, top-k 50, top-p 0.7) from one generator per
    problem: the same seed repeats every token whatever the batch; another seed differs."""
    task, problems = short_problems
    runs = [_published_run(model_path, task, problems, strategy="self-distill", seed=seed, batch=batch)
            for seed, batch in ((7, 3), (7, 3), (7, 1), (8, 3))]
    tokens = [{r["id"]: r["response_tokens"] for r in run} for run in runs]
    assert runs[0] == runs[1]  # every field of every record, steps included
    assert tokens[0] == tokens[2]  # batch-independent: each problem has its own generator
    assert tokens[0] != tokens[3]
    rec = runs[0][0]
    assert rec["config"]["baseline_form"] == "published" and rec["config"]["seed"] == 7
    assert rec["config"]["sampling"] == {"temperature": 0.95, "top_p": 0.7, "top_k": 50, "top_p_first": False}
    assert rec["reference_prompt"].endswith("Great! Let's think step by step. ")


def test_published_hint_runs_its_analysis_pre_pass(model_path, short_problems):
    """The shadow prompt is continued with the model's own analysis up to its last "# CoT";
    a problem whose pre-pass wrote none is skipped with that reason, as the authors skip it."""
    from dasd_local.decoding.slots import Failed

    task, problems = short_problems
    out = _published_run(model_path, task, problems, strategy="hint", seed=1, batch=3, hint_analysis_tokens=24)
    assert len(out) == len(problems)
    for r in out:
        if isinstance(r, Failed):
            assert "# CoT" in r.error
        else:
            assert "# CoT" in r["reference_prompt"] and r["finish_reason"] in ("stop", "length", "repetition")
    skipped = _published_run(model_path, task, problems, strategy="hint", seed=1, batch=3, hint_analysis_tokens=0)
    assert all(isinstance(r, dict) and "\n# CoT:\n" in r["reference_prompt"] for r in skipped)  # the shadow prompt alone
