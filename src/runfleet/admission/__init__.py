"""The one door every request passes: priorities, the bucket, what the server says of limits."""
