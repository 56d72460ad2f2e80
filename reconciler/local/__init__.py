"""One Workspace on one machine: ``python -m reconciler.local run workspace.yaml``.

The "embedded default" for people without a cluster. The command takes the Workspace YAML a
cluster takes and goes through the cluster's own steps, as pure functions:

1. defaults and validates it as the admission webhook does (``api.defaults.default``,
   ``api.validation.validate_create``), with the admin defaults of ``--config`` if given;
2. sizes it and renders its Deployment as the reconciler does (``reconciler.needs``,
   ``reconciler.workload.render``), for the node shape of its instance type (or a local
   pseudo-node with this machine's memory);
3. runs that Pod's main container command here, as a subprocess (``python -m runtime.server``),
   with the local rewrites listed in ``reconciler.local.plan``; adapters come from local
   folders (``--adapter-dir NAME=DIR``) in place of their images.

The reconciler package never imports ``runtime`` (import contract): the runtime is only ever a
child process. Modules: ``settings`` (the command line), ``plan`` (pure: Workspace → command),
``adapters`` (the adapter folder), ``process`` (the child: health, signals), ``cli`` (main).
"""
