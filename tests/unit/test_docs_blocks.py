"""The docs tests' reading of Markdown: fenced blocks, shell commands, port numbers
(tests/docs_blocks.py)."""

from __future__ import annotations

import pytest

from tests.docs_blocks import commands, parse, ports_in, rewrite_ports, strip_comment

PAGE = """# Title

Intro.

## First steps

```sh
make run
```

- a list item with a block:

  ```python
  # chat.py: a saved file
  print("hi")
  ```

## Output

````text
```python
not a block of its own
```
````

~~~yaml
port: 7880
~~~

```
no language
```
"""


def test_blocks_with_their_language_heading_and_position() -> None:
    blocks = parse(PAGE, "page.md")
    assert [(b.info, b.heading, b.index) for b in blocks] == [
        ("sh", "First steps", 1),
        ("python", "First steps", 2),
        ("text", "Output", 3),
        ("yaml", "Output", 4),
        ("", "Output", 5),
    ]
    assert blocks[0].id == "page.md/first-steps/1"
    assert blocks[1].text == '# chat.py: a saved file\nprint("hi")\n'  # list indent removed
    assert "not a block of its own" in blocks[2].text  # a longer fence holds a shorter one
    assert blocks[4].kind is None  # no language: the docs test reports it


def test_a_first_line_comment_names_the_saved_file() -> None:
    blocks = parse(PAGE, "page.md")
    assert blocks[1].file_name == "chat.py"
    assert blocks[0].file_name is None  # shell blocks are run, not saved
    (page,) = parse("```html\n<!doctype html>\n<!-- hello.html: a page -->\n```\n", "p.md")
    assert page.file_name == "hello.html"


def test_shell_commands_one_per_line() -> None:
    text = (
        "# a comment\n"
        "redis-server --port 6379 &   # in the background\n"
        "\n"
        "curl -s http://127.0.0.1:7880/ \\\n"
        "  -H 'X-Note: # not a comment' && echo ok\n"
    )
    first, second = commands(text)
    assert first.background and first.code == "redis-server --port 6379"
    assert not second.background
    assert (
        second.code == "curl -s http://127.0.0.1:7880/    -H 'X-Note: # not a comment' && echo ok"
    )


@pytest.mark.parametrize("text", ["for i in 1 2; do echo $i; done\n", "cat <<EOF\nx\nEOF\n"])
def test_compound_shell_commands_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="one command per line"):
        commands(text)


def test_strip_comment_keeps_quoted_hashes() -> None:
    assert strip_comment("echo '#x' # note") == "echo '#x'"
    assert strip_comment("echo a#b") == "echo a#b"


def test_only_known_port_numbers_are_rewritten() -> None:
    text = "ws://127.0.0.1:7880 --udp-port 7882 port: 6789 78801 10.7880.1 8388608"
    assert ports_in(text) == {7880, 7882, 6789}
    rewritten = rewrite_ports(text, {7880: 41000, 7882: 41001, 6789: 41002})
    assert rewritten == "ws://127.0.0.1:41000 --udp-port 41001 port: 41002 78801 10.7880.1 8388608"
