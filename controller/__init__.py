"""The controller: leader election, the reconcile loop over pure steps, the admin API."""
