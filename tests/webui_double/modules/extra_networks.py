"""Extra networks: ``<name:arg1:arg2>`` prompt tags, the registry, and activation per batch.

Quirks kept on purpose (extensions must cope with them):
* ``parse_prompts`` strips every tag from every prompt but returns only the FIRST prompt's tags;
* ``activate`` calls each mentioned network with its params, then every other registered network with
  ``[]`` (that is how a network learns it should switch itself off), then the scripts'
  ``after_extra_networks_activate``;
* unknown names are only logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict

from modules import errors

extra_network_registry = {}
extra_network_aliases = {}


def initialize():
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network):
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network, alias):
    extra_network_aliases[alias] = extra_network


class ExtraNetworkParams:
    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return self.items == other.items


class ExtraNetwork:
    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        raise NotImplementedError

    def deactivate(self, p):
        raise NotImplementedError


def lookup_extra_networks(extra_network_data):
    """{network object: [params…]} for the names in ``extra_network_data`` that are registered."""
    found = {}
    for name, params in list(extra_network_data.items()):
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            logging.info(f"Skipping unknown extra network: {name}")
            continue
        found.setdefault(network, []).extend(params)
    return found


def activate(p, extra_network_data):
    done = []
    for network, params in lookup_extra_networks(extra_network_data).items():
        try:
            network.activate(p, params)
            done.append(network)
        except Exception as e:
            errors.display(e, f"activating extra network {network.name} with arguments {params}")
    for name, network in extra_network_registry.items():
        if network in done:
            continue
        try:
            network.activate(p, [])
        except Exception as e:
            errors.display(e, f"activating extra network {name}")
    if p.scripts is not None:
        p.scripts.after_extra_networks_activate(p, batch_number=p.iteration, prompts=p.prompts, seeds=p.seeds,
                                                subseeds=p.subseeds, extra_network_data=extra_network_data)


def deactivate(p, extra_network_data):
    mentioned = lookup_extra_networks(extra_network_data)
    for network in [*mentioned, *(n for n in extra_network_registry.values() if n not in mentioned)]:
        try:
            network.deactivate(p)
        except Exception as e:
            errors.display(e, f"deactivating extra network {network.name}")


re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt):
    found = defaultdict(list)

    def take(match):
        found[match.group(1)].append(ExtraNetworkParams(items=match.group(2).split(":")))
        return ""

    return re.sub(re_extra_net, take, prompt), found


def parse_prompts(prompts):
    stripped = []
    first_data = None
    for prompt in prompts:
        text, data = parse_prompt(prompt)
        if first_data is None:
            first_data = data
        stripped.append(text)
    return stripped, first_data


def get_user_metadata(filename, lister=None):
    """The ``<file stem>.json`` beside a network file (written by the card editor), or {}."""
    if filename is None:
        return {}
    path = os.path.splitext(filename)[0] + ".json"
    try:
        if os.path.exists(path):
            with open(path, encoding="utf8") as file:
                return json.load(file)
    except Exception as e:
        errors.display(e, f"reading extra network user metadata from {path}")
    return {}
