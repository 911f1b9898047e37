"""The tests of :mod:`mlops.contract`, one file per module (a package, so their names may repeat those above)."""
