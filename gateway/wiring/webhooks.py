"""The signed webhooks people hear on: a tool or resource quarantined for review, an approval requested."""

from __future__ import annotations

from gateway.approvals.service import ApprovalService
from gateway.approvals.webhook import approval_webhook_payload
from gateway.config import Settings
from gateway.discovery.resources import ResourceReviews
from gateway.discovery.service import ToolReviews
from gateway.discovery.webhook import resource_webhook_payload, review_webhook_payload
from gateway.webhooks import WebhookSender


class PeoplesWebhooks:
    def __init__(self, settings: Settings) -> None:
        discovery, approvals = settings.discovery, settings.approvals
        self.base_url = settings.base_url
        self.reviews = WebhookSender(discovery.webhook_url, discovery.webhook_secret_env, "tool review")
        self.approvals = WebhookSender(approvals.webhook_url, approvals.webhook_secret_env, "approval")

    def connect(self, reviews: ToolReviews, resource_reviews: ResourceReviews, approvals: ApprovalService) -> None:
        base_url = self.base_url
        reviews.on_quarantined.append(lambda review: self.reviews.send(review_webhook_payload(review, base_url)))
        resource_reviews.on_quarantined.append(
            lambda review: self.reviews.send(resource_webhook_payload(review, base_url)))
        approvals.on_new.append(lambda approval: self.approvals.send(approval_webhook_payload(approval, base_url)))

    async def close(self) -> None:
        await self.reviews.close()
        await self.approvals.close()
