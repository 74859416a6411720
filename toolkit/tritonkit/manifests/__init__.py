"""Rendered objects (the stage above release/, below deploy/).

KServe ServingRuntime/InferenceService, the checks against KServe's vendored CRD schemas, the
PrometheusRule and Grafana dashboard, and the Helm chart's values, all from one spec, its SLO and
plan, and a release. Pure: nothing here talks to a cluster (:mod:`tritonkit.deploy.cluster`
applies what is rendered here).

See docs/architecture.md for what this package may import.
"""
