"""SageMaker launchers behind `htr sagemaker` (jobs/sagemaker_launch.py is the command line).

session     sagemaker.Session + the recorder that prints (and in --dry-run answers) API calls
validation  the API's own limits (instance types, ranges, payloads), KMS, VPC, tags
training    `train`: jobs/train.py as a PyTorch training job (spot, torch_distributed, init)
serving     the model both transform and endpoints serve (model.tar.gz, inference env)
transform   `transform`: Batch Transform, one document per request
deploy      `deploy` / `invoke`: a real-time endpoint, optional autoscaling
process     `process`: `htr run --shard auto` as a Processing job on N instances
collect     `collect`: transform output -> the worker's output tables
"""
