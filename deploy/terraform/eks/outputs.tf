# What deploy/k8s overlays need. Nothing here is a secret except database_urls (sensitive).

output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "EKS API server endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "update_kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --name ${aws_eks_cluster.this.name} --region ${var.region}"
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster (IRSA), for further roles."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "registry_url" {
  description = "ECR registry host: docker login to it."
  value       = split("/", aws_ecr_repository.loopml.repository_url)[0]
}

output "image_repository" {
  description = "Image name without tag for the kustomize images: newName (<image_repository>:<tag>)."
  value       = aws_ecr_repository.loopml.repository_url
}

output "artifacts_bucket" {
  description = "Name of the MLflow artifacts bucket."
  value       = aws_s3_bucket.artifacts.bucket
}

output "mlflow_artifacts_destination" {
  description = "MLflow server --artifacts-destination (or --default-artifact-root)."
  value       = "s3://${aws_s3_bucket.artifacts.bucket}/mlflow"
}

output "db_host" {
  description = "Private DNS name of the RDS instance."
  value       = aws_db_instance.this.address
}

output "db_port" {
  description = "Port of the RDS instance."
  value       = aws_db_instance.this.port
}

output "db_master_user_secret_arn" {
  description = "Secrets Manager secret (managed and rotated by RDS) of the master user, for db-bootstrap.sql."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "database_secrets" {
  description = "Secrets Manager secret name per database (mlflow, loopml): JSON with username, password, host, port, dbname, url."
  value       = { for db, s in aws_secretsmanager_secret.database : db => s.name }
}

output "database_urls" {
  description = "postgresql+psycopg:// URL of each database, password included: sensitive, read with terraform output -json."
  value       = local.database_urls
  sensitive   = true
}

output "k8s_namespace" {
  description = "Kubernetes namespace the IRSA roles trust."
  value       = var.k8s_namespace
}

output "service_account_annotations" {
  description = "Annotations per Kubernetes service account name (eks.amazonaws.com/role-arn)."
  value = merge(
    { for k, w in local.workloads : w.service_account => module.irsa[k].sa_annotations },
    { "cluster-autoscaler" = module.irsa_cluster_autoscaler.sa_annotations },
  )
}

output "workload_role_arns" {
  description = "IAM role ARN per workload (server, controller, mlflow, cluster-autoscaler)."
  value = merge(
    { for k, m in module.irsa : k => m.role_arn },
    { "cluster-autoscaler" = module.irsa_cluster_autoscaler.role_arn },
  )
}

# deploy/k8s/overlays/prod/cluster.env, the one file the prod overlay takes names from:
#   terraform output -raw kustomize_env > ../../k8s/overlays/prod/cluster.env
# Keys and their order are the overlay's contract (cluster.env.example); no secret in it.
locals {
  kustomize_env = <<-EOT
    CLOUD=eks
    IMAGE=${aws_ecr_repository.loopml.repository_url}
    HOST=${var.host}
    SERVER_IDENTITY=${module.irsa["server"].role_arn}
    CONTROLLER_IDENTITY=${module.irsa["controller"].role_arn}
    MLFLOW_IDENTITY=${module.irsa["mlflow"].role_arn}
    MLFLOW_ARTIFACTS_DESTINATION=s3://${aws_s3_bucket.artifacts.bucket}/mlflow
  EOT
}

output "kustomize_env" {
  description = "Content of deploy/k8s/overlays/prod/cluster.env (KEY=value lines)."
  value       = local.kustomize_env
}

output "deploy_identity" {
  description = "IAM role deploy.yml assumes through GitHub OIDC (namespace-scoped edit via an EKS access entry)."
  value       = aws_iam_role.deploy.arn
}

# Set each as a variable of the GitHub environment var.github_deploy_environment (docs/deploy.md):
#   terraform output -json github_environment_variables | jq -r 'to_entries[] | [.key, .value] | @json'
output "github_environment_variables" {
  description = "Variables deploy.yml reads from its GitHub environment (no secret among them)."
  value = {
    LOOPML_CLOUD            = "eks"
    LOOPML_DEPLOY_IDENTITY  = aws_iam_role.deploy.arn
    LOOPML_CLUSTER_NAME     = aws_eks_cluster.this.name
    LOOPML_CLUSTER_LOCATION = var.region
    LOOPML_CLUSTER_ENV      = local.kustomize_env
  }
}
