"""The two baselines in the form their authors published: prompt texts and filters, verbatim.

Our controlled variants (DESIGN section 2) give every strategy the same reference view and
greedy decoding, so that only the per-step rule differs. The published forms below are
what the authors ran, for comparisons against their papers:

- SDFT (Yang et al. 2024, github.com/sail-sg/sdft): the rewrite prompt of `main.py`
  (templates `gsm8k_distill` for math, `alpaca_distill_refer` for code as its Magicoder
  and OpenFunctions runs, `alpaca_distill_using` for general data, used here for mcq), and
  the filter of `eval/gen_distilled_data.py`. Its generation (sampling) is in rules.py.
- Hinted decoding (Zhang et al. 2026, arXiv 2602.12222, github.com/zhangmiaosen2000/
  Towards-On-Policy-SFT, `HintedDecoding/Run_HD_example.py`): the "shadow" target prompt
  (system prompt and input prompt) and the cut of its analysis pre-pass at "# CoT".

Where a template had to be fitted to our setting, the code says how. Knows texts only:
rendering through a chat template is views.py's, tokens the engine's.
"""

from __future__ import annotations

# ---- SDFT -------------------------------------------------------------------------------

SDFT_MATH_SYSTEM = (  # main.py: system_gsm8k_distill
    "You are an expert in math. "
    "Below are a math question and its reference answer. "
    "Refer to the reference answer and write a response that appropriately answers the question."
)
SDFT_MATH_USER = "{query}\n\n{reference}"  # gsm8k_distill: "[INST] {{content}}\n\n{{resp}} [/INST]"
SDFT_ANSWER_PREFIX = "Great! Let's think step by step. "  # ends gsm8k_distill's user slot, after [/INST]
SDFT_REFER_SYSTEM = (  # alpaca_distill_refer
    "Below are an instruction that describes a task along with a reference answer. "
    "Refer to the reference answer and write your own response."
)
SDFT_USING_SYSTEM = (  # alpaca_distill_using
    "Below are an instruction that describes a task along with a reference answer. "
    "Using the reference answer as a guide, write your own response."
)
SDFT_ALPACA_USER = "### Instruction:\n{query}\n\n### Reference Answer:\n{reference}\n\n### Response:\n"
# gen_distilled_data.py's verify(): a rewrite containing one of these (any case), or
# starting with "Your turn", is not used (the gold solution is kept instead).
SDFT_BANNED = ("reference answer", "your response", "my response", "your own response", "now it's your turn")
SDFT_BANNED_START = "Your turn"


def sdft_reference_prompt(task: str, query: str, reference: str, render) -> str:
    """SDFT's rewrite prompt for a task. `render(messages)` renders chat messages with the
    generation prompt. Math goes through the model's chat template as the authors' own
    Llama-3 port (`llama3_gsm8k_distill`) does: system turn, user turn, then the answer
    prefix after the assistant header. The alpaca templates are plain text in LLaMA-Factory
    (the system text runs straight into the user slot: its system formatter adds nothing)."""
    if task == "math":
        messages = [{"role": "system", "content": SDFT_MATH_SYSTEM},
                    {"role": "user", "content": SDFT_MATH_USER.format(query=query, reference=reference)}]
        return render(messages) + SDFT_ANSWER_PREFIX
    system = SDFT_REFER_SYSTEM if task == "code" else SDFT_USING_SYSTEM
    return system + SDFT_ALPACA_USER.format(query=query, reference=reference)


def sdft_rejects(response: str) -> str | None:
    """The phrase for which SDFT's filter drops this rewrite, or None when it passes.
    Like the original, the response is stripped first (its strip_dict)."""
    text = response.strip()
    lower = text.lower()
    hit = next((b for b in SDFT_BANNED if b in lower), None)
    if hit is None and text.startswith(SDFT_BANNED_START):
        hit = SDFT_BANNED_START
    return hit


# ---- Hinted decoding ------------------------------------------------------------------------

# SHADOW_SYSTEM_PROMPT_QWEN2, as Python reads the original source: its "\frac{10(10 + 1)}{2}"
# (one backslash, unlike the rest) is a form feed followed by "rac" in the prompt the authors ran.
HINTED_SHADOW_SYSTEM = """
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

To find the sum of the numbers from 1 to 10, we can use the formula for the sum of the first \\( n \\) natural numbers, which is given by:

\\[
S = \\frac{n(n + 1)}{2}
\\]

Here, \\( n = 10 \\). Let's substitute \\( n \\) into the formula and calculate step by step.

1. Substitute \\( n = 10 \\) into the formula:
   \\[
   S = \x0crac{10(10 + 1)}{2}
   \\]

2. Simplify the expression inside the parentheses:
   \\[
   S = \\frac{10 \\times 11}{2}
   \\]

3. Perform the multiplication:
   \\[
   S = \\frac{110}{2}
   \\]

4. Perform the division:
   \\[
   S = 55
   \\]

So, the sum of the numbers from 1 to 10 is \\( 55 \\).

\\[
\\boxed{55}
\\]
"""
HINTED_INPUT = """
# Question:
{question}

# Answer:
{answer}

# CoT:
"""
HINTED_COT_MARK = "# CoT"
HINTED_SPLITTER = "\\boxed{"  # from here on the base view decodes alone


def hinted_shadow_messages(question: str, answer: str) -> list[dict]:
    """The target ("shadow") view's chat messages, before its analysis pre-pass."""
    return [{"role": "system", "content": HINTED_SHADOW_SYSTEM},
            {"role": "user", "content": HINTED_INPUT.format(question=question, answer=answer)}]


def hinted_analysis(pre_pass: str) -> str | None:
    """The pre-pass text up to and including its last "# CoT", which the shadow prompt is
    continued with (`gen_fim_cot`); None when there is none (the authors skip the problem)."""
    end = pre_pass.rfind(HINTED_COT_MARK)
    return None if end == -1 else pre_pass[:end + len(HINTED_COT_MARK)]
