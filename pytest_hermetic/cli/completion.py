"""Shell completion: `hermetic completion bash|zsh|fish` prints a script.

The script is generated from the command's own argparse parser: its verbs,
each verb's flags (and which take a value), and what each positional
argument is (an image, a container, a network, one of some words, or the
rest of the command line, as `run IMAGE CMD...`).  Names are completed
live: the script calls back the hidden `hermetic __complete
images|containers|networks`, which reads the store's tags, the state
folders and the networks' folders, and prints one name a line.

bash gets a completion function; zsh uses that same function through its
`bashcompinit`; fish gets a function that walks the line the same way.
"""

from __future__ import annotations

import argparse

from .output import PROG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import Verb

SHELLS = ("bash", "zsh", "fish")
# What a positional argument or an option's value is, by its metavar or dest.
IMAGE_METAVARS = ("IMAGE", "NAME[:TAG|@DIGEST]")
CONTAINER_METAVARS = ("CONTAINER",)
NETWORK_OPTIONS = ("net",)  # dests: a network name, or `bridge`
FILE_OPTIONS = ("volumes", "env_file")


def add_parsers(verb: "Verb") -> None:
    comp = verb("completion", help="print a shell completion script (bash, zsh or fish)")
    comp.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    comp.set_defaults(handler=cmd_completion)
    # Hidden (no help: not listed): the scripts' call back for names.
    names = verb("__complete")
    names.add_argument("what", choices=("images", "containers", "networks"))
    names.set_defaults(handler=cmd_complete)


# -- what the parser says ----------------------------------------------------------


class Shape:
    """One verb (or `network rm`): its flags and what its positionals are."""

    def __init__(self) -> None:
        self.options: list[str] = []
        self.flag_groups: list[list[str]] = []  # the spellings of each flag (`-q`, `--quiet`)
        self.option_help: dict[str, str] = {}  # flag -> its help, for fish's descriptions
        self.valued: list[str] = []  # flags that take the next word as their value
        self.option_kinds: dict[str, str] = {}  # flag -> kind of its value
        self.positionals: list[str] = []  # kinds; a last one ending in "+" repeats
        self.help = ""


def _positional_kind(action: argparse.Action) -> str:
    if action.nargs == argparse.REMAINDER:
        return "rest"
    if isinstance(action, argparse._SubParsersAction):
        return "sub=" + ",".join(action.choices)
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if action.choices:
        kind = "choice=" + ",".join(str(c) for c in action.choices)
    elif metavar in IMAGE_METAVARS or action.dest == "image":
        kind = "images"
    elif metavar in CONTAINER_METAVARS or action.dest in ("container", "containers"):
        kind = "containers"
    else:
        kind = "none"
    return kind + ("+" if action.nargs in ("+", "*") else "")


def shapes(top: argparse.ArgumentParser) -> tuple[dict[str, Shape], list[str]]:
    """Every public verb's shape (sub-actions as `network rm`), and the top-level flags."""
    found: dict[str, Shape] = {}

    def walk(key: str, parser: argparse.ArgumentParser, help_text: str) -> None:
        shape = found[key] = Shape()
        shape.help = help_text
        for action in parser._actions:
            if action.option_strings:
                if action.help == argparse.SUPPRESS:
                    continue
                shape.options += action.option_strings
                shape.flag_groups.append(list(action.option_strings))
                for flag in action.option_strings:
                    shape.option_help[flag] = " ".join((action.help or "").split())
                if action.nargs != 0:
                    shape.valued += action.option_strings
                    kind = "net" if action.dest in NETWORK_OPTIONS else "files" if action.dest in FILE_OPTIONS else ""
                    for flag in action.option_strings:
                        if kind:
                            shape.option_kinds[flag] = kind
                continue
            shape.positionals.append(_positional_kind(action))
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    walk(f"{key} {name}", sub, helps.get(name, ""))

    subparsers = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    public = {choice.dest: choice.help or "" for choice in subparsers._choices_actions}
    for name, parser in subparsers.choices.items():
        if name in public:
            walk(name, parser, public[name])
    # `network rm NAME`: a network; `network create NAME` a new name (nothing to complete).
    if "network rm" in found:
        found["network rm"].positionals = ["networks+"]
    top_flags = [flag for action in top._actions if action.option_strings for flag in action.option_strings]
    return found, top_flags


# -- the scripts ----------------------------------------------------------------


def _case(pairs: list[tuple[str, str]], var: str) -> str:
    lines = ['    case "$1" in']
    for key, value in pairs:
        lines.append(f"        {_sh_quote(key)}) {var}={_sh_quote(value)} ;;")
    lines.append(f"        *) {var}='' ;;")
    lines.append("    esac")
    return "\n".join(lines)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bash_script(top: argparse.ArgumentParser) -> str:
    verbs, top_flags = shapes(top)
    public = " ".join(k for k in verbs if " " not in k)
    opt_kinds = [(f"{key} {flag}", kind) for key, shape in verbs.items() for flag, kind in shape.option_kinds.items()]
    return f"""# bash completion for {PROG} (generated by `{PROG} completion bash`; zsh uses it through bashcompinit)
# Install: {PROG} completion bash > ~/.local/share/bash-completion/completions/{PROG}
__hermetic_opts() {{
{_case([(k, " ".join(s.options)) for k, s in verbs.items()], "REPLY")}
}}
__hermetic_valued() {{
{_case([(k, " ".join(s.valued)) for k, s in verbs.items()], "REPLY")}
}}
__hermetic_optkind() {{
{_case(opt_kinds, "REPLY")}
}}
__hermetic_pos() {{
{_case([(k, " ".join(s.positionals)) for k, s in verbs.items()], "REPLY")}
}}
# The kind of the positional argument number $2 of verb $1 (string operations
# only: the same code runs in zsh, whose arrays and word splitting differ).
__hermetic_kind_at() {{
    local rest last='' n=0
    __hermetic_pos "$1"
    rest=$REPLY
    REPLY=''
    while [[ -n $rest ]]; do
        last=${{rest%% *}}
        if ((n == $2)); then REPLY=$last; break; fi
        n=$((n + 1))
        if [[ $rest == *' '* ]]; then rest=${{rest#* }}; else rest=''; fi
    done
    [[ -z $REPLY && $last == *+ ]] && REPLY=$last
    REPLY=${{REPLY%+}}
}}
# Words of a kind: names from the store, the state folders, the networks.
__hermetic_words() {{
    case "$1" in
        images|containers|networks) "$2" __complete "$1" 2>/dev/null ;;
        net) echo bridge; "$2" __complete networks 2>/dev/null ;;
        choice=*|sub=*) local list=${{1#*=}}; echo "${{list//,/ }}" ;;
    esac
}}
_hermetic() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prog=${{COMP_WORDS[0]}} verb='' word i=1 pos=0 skip='' kind=''
    COMPREPLY=()
    while ((i < COMP_CWORD)); do
        word=${{COMP_WORDS[i]}}
        i=$((i + 1))
        if [[ -n $skip ]]; then skip=''; continue; fi
        if [[ -z $verb ]]; then
            [[ $word == -* ]] && continue
            verb=$word
            continue
        fi
        __hermetic_kind_at "$verb" "$pos"
        [[ $REPLY == rest ]] && {{ kind=rest; break; }}
        if [[ $word == -* ]]; then
            __hermetic_valued "$verb"
            [[ $word != *=* && " $REPLY " == *" $word "* ]] && skip=$word
            continue
        fi
        if [[ $REPLY == sub=* ]]; then verb="$verb $word"; pos=0; continue; fi
        pos=$((pos + 1))
    done
    if [[ -z $verb ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W {_sh_quote(" ".join(top_flags))} -- "$cur"))
        else
            COMPREPLY=($(compgen -W {_sh_quote(public)} -- "$cur"))
        fi
        return 0
    fi
    if [[ -z $kind && -n $skip ]]; then
        __hermetic_optkind "$verb $skip"
        kind=${{REPLY:-none}}
    elif [[ -z $kind && $cur == -* ]]; then
        __hermetic_kind_at "$verb" "$pos"
        if [[ $REPLY != rest ]]; then
            __hermetic_opts "$verb"
            COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
            return 0
        fi
        kind=rest
    elif [[ -z $kind ]]; then
        __hermetic_kind_at "$verb" "$pos"
        kind=${{REPLY:-none}}
    fi
    case $kind in
        rest|files) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
        none) ;;
        *) COMPREPLY=($(compgen -W "$(__hermetic_words "$kind" "$prog")" -- "$cur")) ;;
    esac
    return 0
}}
complete -F _hermetic {PROG}
"""


def zsh_script(top: argparse.ArgumentParser) -> str:
    return f"""# zsh completion for {PROG} (generated by `{PROG} completion zsh`): the bash
# completion function, through zsh's bashcompinit.
# Install: {PROG} completion zsh > ~/.hermetic-completion.zsh, and in ~/.zshrc:
#   source ~/.hermetic-completion.zsh
autoload -U +X compinit && {{ (( ${{+functions[compdef]}} )) || compinit; }}
autoload -U +X bashcompinit && bashcompinit
{bash_script(top)}"""


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(top: argparse.ArgumentParser) -> str:
    verbs, top_flags = shapes(top)

    def switch(name: str, pairs: list[tuple[str, list[str]]]) -> str:
        lines = [f"function {name}", "    switch $argv[1]"]
        for key, values in pairs:
            lines.append(f"        case {_fish_quote(key)}")
            if values:
                lines.append("            printf '%s\\n' " + " ".join(_fish_quote(v) for v in values))
        lines += ["    end", "end"]
        return "\n".join(lines)

    opt_kinds = [(f"{key} {flag}", [kind]) for key, shape in verbs.items() for flag, kind in shape.option_kinds.items()]
    described = [(key, [flag + "\t" + shape.option_help.get(flag, "") for flag in shape.options])
                 for key, shape in verbs.items()]
    verb_lines = "\n".join(f"    printf '%s\\t%s\\n' {_fish_quote(k)} {_fish_quote(s.help)}" for k, s in verbs.items()
                           if " " not in k)
    return f"""# fish completion for {PROG} (generated by `{PROG} completion fish`)
# Install: {PROG} completion fish > ~/.config/fish/completions/{PROG}.fish
{switch("__hermetic_opts", described)}
{switch("__hermetic_valued", [(k, s.valued) for k, s in verbs.items()])}
{switch("__hermetic_optkind", opt_kinds)}
{switch("__hermetic_pos", [(k, s.positionals) for k, s in verbs.items()])}
function __hermetic_kind_at --argument-names verb pos
    set -l kinds (__hermetic_pos $verb)
    set -l n (count $kinds)
    test $n -eq 0; and return
    set -l kind
    if test $pos -lt $n
        set kind $kinds[(math $pos + 1)]
    else if string match -q -- '*+' $kinds[-1]
        set kind $kinds[-1]
    end
    string replace -r -- '\\+$' '' $kind
end
function __hermetic_verbs
{verb_lines}
end
function __hermetic_complete
    set -l words (commandline -opc)
    set -l prog $words[1]
    set -e words[1]
    set -l cur (commandline -ct)
    set -l verb ''
    set -l pos 0
    set -l skip ''
    set -l kind ''
    for word in $words
        if test -n "$skip"
            set skip ''
            continue
        end
        if test -z "$verb"
            string match -q -- '-*' $word; and continue
            set verb $word
            continue
        end
        set -l here (__hermetic_kind_at $verb $pos)
        if test "$here" = rest
            set kind rest
            break
        end
        if string match -q -- '-*' $word
            if not string match -q -- '*=*' $word; and contains -- $word (__hermetic_valued $verb)
                set skip $word
            end
            continue
        end
        if string match -q -- 'sub=*' $here
            set verb "$verb $word"
            set pos 0
            continue
        end
        set pos (math $pos + 1)
    end
    if test -z "$verb"
        if string match -q -- '-*' $cur
            printf '%s\\n' {" ".join(_fish_quote(f) for f in top_flags)}
        else
            __hermetic_verbs
        end
        return
    end
    if test -z "$kind"; and test -n "$skip"
        set kind (__hermetic_optkind "$verb $skip")
        test -n "$kind"; or set kind none
    else if test -z "$kind"
        set kind (__hermetic_kind_at $verb $pos)
        test -n "$kind"; or set kind none
        if string match -q -- '-*' $cur; and test "$kind" != rest
            __hermetic_opts $verb
            return
        end
    end
    switch $kind
        case rest files
            __fish_complete_path $cur
        case none
        case images containers networks
            $prog __complete $kind 2>/dev/null
        case net
            echo bridge
            $prog __complete networks 2>/dev/null
        case 'choice=*' 'sub=*'
            string split , (string replace -r -- '^[a-z]+=' '' $kind)
    end
end
complete -c {PROG} -f -a '(__hermetic_complete)'
"""


def cmd_completion(args: argparse.Namespace) -> int:
    from . import parser

    script = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell](parser())
    print(script, end="")
    return 0


# -- the call back -----------------------------------------------------------------


def names(what: str) -> list[str]:
    """The names a shell may complete: images (and `host`), containers (names,
    else short ids), named networks."""
    if what == "images":
        from ..images import reference as refs
        from ..images.store import Store

        found = ["host"]
        for name in Store().read_refs():
            try:
                found.append(refs.parse(name).familiar)
            except ValueError:
                continue
        return found
    if what == "containers":
        from ..state import list_states

        return [state.get("name") or state["id"][:12] for state in list_states()]
    from ..networks.named import list_networks

    return [info["name"] for info in list_networks() if info.get("kind") == "named"]


def cmd_complete(args: argparse.Namespace) -> int:
    for name in names(args.what):
        print(name)
    return 0
