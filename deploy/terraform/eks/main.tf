locals {
  prefix       = "${var.name}-${var.environment}"
  cluster_name = local.prefix

  tags = merge(var.tags, {
    app         = var.name
    environment = var.environment
    managed-by  = "terraform"
  })

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  azs        = slice(data.aws_availability_zones.available.names, 0, var.az_count)
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first var.az_count zones by name are used (local.azs), so a zone AWS adds later cannot add subnets; pinning names per region would make the root region-specific.
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"] # no Local Zones / Wavelength Zones
  }
}

# ---------------------------------------------------------------------------------------------
# KMS: one key for Kubernetes Secrets in etcd, one for the data at rest (artifacts bucket,
# database, Secrets Manager, ECR, CloudWatch log groups). Both rotate yearly.
# ---------------------------------------------------------------------------------------------

resource "aws_kms_key" "eks" {
  description             = "${local.prefix}: EKS secrets envelope encryption"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
    ]
  })
}

resource "aws_kms_alias" "eks" {
  name          = "alias/${local.prefix}-eks"
  target_key_id = aws_kms_key.eks.key_id
}

resource "aws_kms_key" "data" {
  description             = "${local.prefix}: artifacts, database, secrets, images and logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # IAM policies of the account decide who uses the key (the workload roles do, see
        # identities.tf): the key policy only delegates to the account.
        Sid       = "AccountAdministration"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action = [
          "kms:Encrypt*",
          "kms:Decrypt*",
          "kms:ReEncrypt*",
          "kms:GenerateDataKey*",
          "kms:Describe*",
        ]
        Resource = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "data" {
  name          = "alias/${local.prefix}-data"
  target_key_id = aws_kms_key.data.key_id
}
