"""`make demo`: ModelGate's lifecycle run locally, with no AWS account."""
