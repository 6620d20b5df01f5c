"""AWS glue for the Lambda functions and the ECS listener: powertools logging/metrics, secrets,
the replies-stream consumer and the Lambda runtimes. Nothing here is needed by `cdp serve`.

Imports stay lazy: a job handler must not pay for FastAPI, and nothing pays for boto3 before it
talks to AWS.
"""
