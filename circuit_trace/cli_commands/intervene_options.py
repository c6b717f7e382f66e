"""The `circuit-trace intervene` command's options (argparse only: building the parser must not
import the interventions, so `--help` and bad arguments answer at once)."""

from __future__ import annotations

import argparse

from .argtypes import positive_float, positive_int, unit_interval

__all__ = ["add_intervene_options"]


def add_edit_options(p: argparse.ArgumentParser) -> None:
    """--scale / --set / --add, supernodes, --swap, --ablate-errors."""
    ids = "ID is layer_index (every position), layer_index_pos, or a supernode NAME; repeatable"
    p.add_argument("--scale", action="append", default=[], metavar="ID=F", help=f"multiply by F (e.g. 0_225=-5); {ids}")
    p.add_argument("--set", action="append", default=[], metavar="ID=V", help=f"set the activation to V; {ids}")
    p.add_argument("--add", action="append", default=[], metavar="ID=V", help=f"add V to the activation; {ids}")
    p.add_argument(
        "--supernode",
        action="append",
        default=[],
        metavar="NAME=IDS",
        help="name a group of feature ids (comma separated, each layer_index or layer_index_pos); repeatable",
    )
    p.add_argument(
        "--supernodes-from",
        action="append",
        default=[],
        metavar="FILE_OR_URL",
        help="read named supernodes from a Neuronpedia graph JSON (its qParams, as the viewer saves them) "
        "or a Neuronpedia graph URL (its supernodes= parameter; read from the string, offline)",
    )
    p.add_argument(
        "--strongest",
        type=positive_int,
        default=None,
        metavar="K",
        help="name `strongest` the K features with the strongest direct edges into the answer (the top "
        "logit) in the prompt's attribution graph, traced here: edit them with e.g. --scale strongest=-5",
    )
    p.add_argument(
        "--swap",
        action="append",
        default=[],
        metavar="DOWN=UP",
        help="turn supernode (or feature id) DOWN off and set UP to its activations in --swap-from; "
        "the ids of both need positions (layer_index_pos): DOWN's in PROMPT, UP's in --swap-from. Each UP "
        "feature is set where it is in --swap-from, the two prompts aligned at their ends",
    )
    p.add_argument("--swap-from", default=None, metavar="PROMPT", help="the prompt UP's activations are read from")
    p.add_argument(
        "--swap-at-down",
        action="store_true",
        help="the older placement: every UP feature at every position of DOWN (its strongest activation in --swap-from)",
    )
    p.add_argument(
        "--swap-scale", type=float, default=1.0, help="multiply UP's activations by this (default %(default)s)"
    )
    p.add_argument(
        "--ablate-errors",
        nargs="?",
        const="all",
        default=None,
        metavar="LAYERS",
        help="remove the transcoders' reconstruction error at every position of LAYERS (comma separated; "
        "default all layers)",
    )


def add_generation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (with --generate N)")
    g.add_argument("--generate", type=positive_int, default=None, metavar="N", help="generate N tokens, edited and not")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=positive_float, default=None, help="sampling temperature (default 1)")
    g.add_argument("--top-p", type=unit_interval, default=None, help="nucleus sampling mass (default 1)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed (default: random, printed)")
    g.add_argument(
        "--apply-to",
        choices=["prompt", "generated", "all"],
        default=None,
        help="where edits without a position act: the prompt (default), each generated position "
        "(open-ended steering), or all",
    )


def add_intervene_options(p: argparse.ArgumentParser) -> None:
    add_edit_options(p)
    add_generation_options(p)
