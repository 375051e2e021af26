"""Rollback: the plan's triggers and procedures as behaviour.

``actions`` holds what a step can do, ``journal`` the crash-safe record of a rollback in the
evidence tree, ``runner`` runs procedures step by step (and resumes an interrupted rollback) and
holds ``readiness``, the rollback_gate's check that a rollback could be done now,
``expectations`` says what must hold after a rollback (``after_rollback``), and ``controller``
connects it all to the pytest run (triggers fired after the checks, steps reported as tests).
"""
