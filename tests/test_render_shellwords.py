"""The shell scanner that rewriting relies on: commands, words and their exact offsets."""
import pytest

from helpers.render.shellwords import command_words, package_actions, program, scan


def commands(text: str) -> list[list[str]]:
    return [[w.raw for w in c] for c in scan(text)]


@pytest.mark.parametrize("text, expected", [
    ("a b && c || d; e | f & g", [["a", "b"], ["c"], ["d"], ["e"], ["f"], ["g"]]),
    ('echo "a && b" \'c; d\'', [["echo", '"a && b"', "'c; d'"]]),
    ("x $(echo \"q)\" ) ${A:-a b} `p q`", [["x", '$(echo "q)" )', "${A:-a b}", "`p q`"]]),
    ("a \\\n  b \\\n  && c", [["a", "b"], ["c"]]),
    ("a 2>&1 &>/dev/null", [["a", "2>&1", "&>/dev/null"]]),
    ("a # a comment && not a command\nb", [["a"], ["b"]]),
    ("if [ x ]; then y; fi", [["if", "[", "x", "]"], ["then", "y"], ["fi"]]),
    ("case $v in 1) a ;; esac", [["case", "$v", "in", "1"], ["a"], ["esac"]]),
])
def test_scan_splits_commands_and_words(text, expected):
    assert commands(text) == expected


def test_words_keep_their_offsets():
    text = "apt-get update && git clone --depth=1 URL dest"
    for command in scan(text):
        for word in command:
            assert text[word.start:word.end] == word.raw


@pytest.mark.parametrize("text, expected", [
    ("then FOO=1 sudo -E env A=b /usr/bin/python3 -m pip", ["/usr/bin/python3", "-m", "pip"]),
    ("fi", []),
    ("for x in a b", []),
])
def test_command_words_skip_keywords_assignments_and_wrappers(text, expected):
    assert [w.raw for w in command_words(scan(text)[0])] == expected


def test_program_and_unquoted_values():
    words = scan("'/usr/bin/git' \"sglang[all]\" plain")[0]
    assert program(words[0]) == "git"
    assert [w.value for w in words[1:]] == ["sglang[all]", "plain"]


@pytest.mark.parametrize("text, actions", [
    ("pip install -U x", [("pip", "install")]),
    ("python3 -m pip --no-cache-dir install -e python", [("pip", "install")]),
    ("uv pip install --system x && uv sync", [("uv", "install"), ("uv", "sync")]),
    ("bash -c 'cd /w && pip3 wheel .'", [("pip", "wheel")]),
    ("pip --version && apt-get install -y git", []),            # no pip install, though both words are there
    ("python3 setup.py develop", [("setup.py", "develop")]),
    ("python -m build --wheel", [("build", "build")]),
    ("echo 'pip install x' > notes.txt", []),
])
def test_package_actions_are_read_by_the_lexer_inside_sh_c_too(text, actions):
    assert package_actions(text) == actions
