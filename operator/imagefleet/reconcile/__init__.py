"""Reconcile logic: plan (pure) what to write for an ImageModelDeployment, then write only that."""

from .plan import Config, Event, Observed, Plan, plan
from .reconciler import Reconciler

__all__ = ["Config", "Event", "Observed", "Plan", "Reconciler", "plan"]
