"""``fleetwire demo``: the loopback fleet, its scenarios and behaviours, the scaling
study, the live view, and the report of a run.
"""
