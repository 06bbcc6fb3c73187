"""The official Kubernetes client, loaded only by the commands that talk to a cluster, configured once.

Importing it takes a second and pulls in a hundred modules, so it is imported here, when a
command needs it, and its absence is said as the one ``pip install`` that fixes it. The
configuration comes from a kubeconfig (``--kubeconfig``/``--context``, else ``$KUBECONFIG`` or
``~/.kube/config``), else from the Pod's in-cluster service account.
"""

import binascii
from typing import Any, NamedTuple

from webhook.errors import ClusterError, ConfigError


class Kubernetes(NamedTuple):
    """The client's modules and the exceptions its calls raise: typed ``Any`` on purpose (it ships no types)."""

    client: Any
    api_client: Any
    api_exception: type[Exception]
    transport_errors: tuple[type[Exception], ...]


def connect(*, kubeconfig: str | None, context: str | None, command: str, extra: str) -> Kubernetes:
    """An ``ApiClient`` for the configured cluster; ``ConfigError`` naming ``extra`` if the client is missing."""
    try:
        from kubernetes import client
        from kubernetes import config as kube_config
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError
    except ImportError:
        raise ConfigError(
            f"token-projector {command} needs the Kubernetes client: pip install 'token-projector[{extra}]'"
        ) from None
    config: Any = kube_config  # untyped: its functions are called as the client documents them
    try:
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        except config.ConfigException:
            if kubeconfig or context:
                raise
            config.load_incluster_config(client_configuration=configuration)
    except (config.ConfigException, OSError, binascii.Error) as error:
        raise ClusterError(f"no usable Kubernetes configuration: {error}") from None
    configuration.retries = 0  # one clear error now beats a silent minute of retries
    return Kubernetes(client, client.ApiClient(configuration), ApiException, (HTTPError, OSError))
