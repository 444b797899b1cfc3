"""Step-up approvals: a StepUp decision becomes a request a person decides, good for one call.

model: the request and the approver; service: requests, decisions, waiting, expiry; step_up: what
the calling agent experiences (hold, pending, URL elicitation, input-required results).
"""
