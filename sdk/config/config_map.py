"""A Weir config as a Kubernetes ConfigMap: what `weir build --kubernetes-format` prints and
the Helm chart's `existingConfigMap` value takes (its config Job deploys the key
`config.yaml` after every install and upgrade). Ray's `serve build -k` prints a RayService's
serveConfigV2 for KubeRay; Weir's chart reads a ConfigMap instead."""

from __future__ import annotations

import yaml

#: The key of the config file in the ConfigMap (the chart mounts it under this name).
CONFIG_KEY = "config.yaml"
#: The ConfigMap's name unless told otherwise.
DEFAULT_NAME = "weir-config"


class _Literal(str):
    """A string YAML prints as a `|` block, so the config reads as the file it is."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def config_map(config_text: str, name: str = DEFAULT_NAME) -> str:
    """The ConfigMap holding `config_text` (a config file's YAML) under `config.yaml`."""
    doc = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "weir",
                                                 "app.kubernetes.io/component": "config"}},
           "data": {CONFIG_KEY: _Literal(config_text.rstrip("\n") + "\n")}}
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000)
