"""Embedded demo systems: a CRM and a finance reference API served over real HTTP."""
