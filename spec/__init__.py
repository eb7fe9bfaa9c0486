"""The normative spec of the Fleet Coordination Protocol, shipped with the package as data."""
