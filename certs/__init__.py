"""CA and serving certificates for the webhook, their Secret, caBundle injection and rotation.

Modules (import the one you need; this package re-exports nothing, so ``certs.pki`` does not pull
in the Kubernetes client):

- :mod:`certs.pki` — pure X.509: ``make_ca``, ``make_serving_cert``, ``webhook_dns_names``,
  PEM parsing, ``needs_rotation``, ``verify_chain`` (``cryptography``'s own verifier).
- :mod:`certs.plan` — pure decisions: ``plan(now, secret_data, wanted) -> Action``
  (keep / issue / renew-ca / prune-ca / renew-serving) and ``carry_out``; ``CertBundle``.
- :mod:`certs.settings` — ``CertSettings`` (bounds, descriptions, ``from_env``).
- :mod:`certs.tls` — ``ReloadableServerContext(bundle).context`` / ``.reload(bundle)``,
  ``client_context(ca_pem)``.
- :mod:`certs.kube` — ``CertKube``: the only module here that talks to Kubernetes (through the
  controller's one client, :class:`reconciler.kube.Kube`).
- :mod:`certs.manager` — ``CertManager(settings, kube).ensure() -> CertBundle`` and ``.run()``.
- :mod:`certs.errors` — the exception tree rooted at ``CertError``.

The whole flow, in a webhook process::

    from certs.kube import FIELD_MANAGER, CertKube
    from certs.manager import CertManager
    from certs.settings import CertSettings
    from certs.tls import ReloadableServerContext

    from reconciler.kube import Kube, load_in_cluster

    kube = CertKube(Kube(load_in_cluster(os.environ), field_manager=FIELD_MANAGER))
    manager = CertManager(CertSettings.from_env(os.environ), kube)
    bundle = await manager.ensure()
    tls = ReloadableServerContext(bundle)
    # web.TCPSite(runner, host, port, ssl_context=tls.context)
    task = asyncio.create_task(manager.run(tls.reload, stop=stop_event))
"""
