"""AI replies: the chat model client and conversation memory."""
