"""The liveness service: sample inspection at upload, liveness and challenge-response per try."""
