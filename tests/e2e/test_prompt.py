"""The system prompt is the user's to change: `--system-prompt FILE` replaces
rlm's (placeholders filled, the input's description moved into it when it asks
for it, child RLMs too), `rlm prompt` prints the one rlm would send and
`--template` the one to start from; a missing or empty file is a usage error
before any model call."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import FakeLM, RlmTestCase, main, repl  # noqa: E402


class Prompt(RlmTestCase):
    def test_rlm_prompt_prints_the_system_prompt(self):
        res = self.rlm(["--max-iterations", "7"], None, trace=False, command="prompt")
        self.assertExit(res, 0)
        self.assertTrue(res.stdout.startswith("You are the root of a Recursive Language Model."))
        self.assertIn("You have 7 turns", res.stdout)
        self.assertIn("You may import re, json, math,", res.stdout)
        self.assertNotIn("{max_iterations}", res.stdout)
        template = self.rlm(["--template"], None, trace=False, command="prompt")
        self.assertExit(template, 0)
        self.assertIn("You have {max_iterations} turns", template.stdout)
        self.assertIn("You may import {allowed_modules}.", template.stdout)
        # The template given back as --system-prompt is rlm's own prompt.
        path = self.write("mine.txt", template.stdout)
        again = self.rlm(["--max-iterations", "7", "--system-prompt", path], None, trace=False,
                         command="prompt")
        self.assertEqual(again.stdout, res.stdout)
        bad = self.rlm(["a question"], None, trace=False, command="prompt")
        self.assertExit(bad, 2)

    def test_custom_system_prompt_is_sent(self):
        prompt = self.write("prompt.txt", "CUSTOM-SYSTEM: you have {max_iterations} turns.\n"
                            "The input: {context_description}\nImports: {allowed_modules}.\n")
        ctx = self.write("notes.txt", "the secret word is plover\n")
        rules = [
            {"match": r"CUSTOM-SYSTEM: you have 3 turns\.\nThe input: The context is a str of 26 "
                      r"characters", "on": "system", "reply": repl("FINAL(context.split()[-1])")},
            {"match": ".", "reply": "FINAL(the default prompt was sent)"},
        ]
        with FakeLM(rules) as lm:
            res = self.rlm(["--json", "--max-iterations", "3", "--system-prompt", prompt,
                            "--context", ctx, "What is the secret word?"], lm)
        self.assertExit(res, 0)
        self.assertEqual(res.report["answer"], "plover")
        # The description went into the system prompt, not again into the question.
        first = res.events("root_request")[0]["last_message"]
        self.assertNotIn("The context is a str", first)
        self.assertIn("What is the secret word?", first)
        self.assertEqual(res.events("run_start")[0]["config"]["system_prompt"][:14], "CUSTOM-SYSTEM:")

    def test_bad_system_prompt_files(self):
        empty = self.write("empty.txt", "\n  \n")
        with FakeLM([{"match": ".", "reply": "FINAL(x)"}]) as lm:
            for path, why in ((os.path.join(self.tmp, "missing.txt"), "cannot open"),
                              (empty, "is empty")):
                for command in ("ask", "chat"):
                    args = ["--system-prompt", path] + (["q"] if command == "ask" else [])
                    res = self.rlm(args, lm, command=command, stdin="q\n", trace=False)
                    self.assertExit(res, 2)
                    self.assertIn("--system-prompt file", res.stderr)
                    self.assertIn(why, res.stderr)
            self.assertEqual(lm.counters()["requests"], 0)


if __name__ == "__main__":
    main()
