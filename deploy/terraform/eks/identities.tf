# ---------------------------------------------------------------------------------------------
# Workload identities (IRSA, least privilege). Each role can be assumed only by one Kubernetes
# service account of var.k8s_namespace (trust policy in modules/eks-irsa-role):
#
#   service account     artifacts bucket                  Secrets Manager
#   loopml-server       read (List/Get)                   loopml database secret
#   loopml-controller   read/write (+Put/Delete)          loopml database secret
#   loopml-mlflow       read/write (+Put/Delete)          mlflow database secret
#
# With the MLflow server proxying artifacts (--serve-artifacts, the README's setup), only the
# MLflow role touches the bucket; the server and controller grants serve clients that read and
# write s3:// artifact URIs directly (--no-serve-artifacts). KMS use is limited to calls made
# through S3 and Secrets Manager. With var.db_iam_auth, each role may also connect to PostgreSQL
# as its database user with an IAM token.
# ---------------------------------------------------------------------------------------------

locals {
  workloads = {
    server = {
      service_account = var.k8s_service_accounts.server
      write           = false
      database        = "loopml"
      description     = "loopml serving replicas: read artifacts, loopml database"
    }
    controller = {
      service_account = var.k8s_service_accounts.controller
      write           = true
      database        = "loopml"
      description     = "loopml controller: read/write artifacts, loopml database"
    }
    mlflow = {
      service_account = var.k8s_service_accounts.mlflow
      write           = true
      database        = "mlflow"
      description     = "MLflow tracking server: read/write artifacts, mlflow database"
    }
  }
}

data "aws_iam_policy_document" "workload" {
  for_each = local.workloads

  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn]
  }

  statement {
    sid       = "ReadArtifacts"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }

  dynamic "statement" {
    for_each = each.value.write ? [1] : []

    content {
      sid = "WriteArtifacts"
      actions = [
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
      ]
      resources = ["${aws_s3_bucket.artifacts.arn}/*"]
    }
  }

  statement {
    sid       = "DataKeyThroughS3AndSecretsManager"
    actions   = each.value.write ? ["kms:Decrypt", "kms:GenerateDataKey"] : ["kms:Decrypt"]
    resources = [aws_kms_key.data.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "secretsmanager.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "DatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [aws_secretsmanager_secret.database[each.value.database].arn]
  }

  dynamic "statement" {
    for_each = var.db_iam_auth ? [1] : []

    content {
      sid       = "DatabaseIamAuth"
      actions   = ["rds-db:connect"]
      resources = ["arn:${local.partition}:rds-db:${var.region}:${local.account_id}:dbuser:${aws_db_instance.this.resource_id}/${each.value.database}"]
    }
  }
}

module "irsa" {
  source   = "../modules/eks-irsa-role"
  for_each = local.workloads

  name              = "${local.prefix}-${each.key}"
  description       = each.value.description
  oidc_provider_arn = aws_iam_openid_connect_provider.this.arn
  oidc_issuer_url   = aws_iam_openid_connect_provider.this.url
  namespace         = var.k8s_namespace
  service_account   = each.value.service_account
  policy_json       = data.aws_iam_policy_document.workload[each.key].json
}

# ---------------------------------------------------------------------------------------------
# Cluster autoscaler (kube-system/cluster-autoscaler): scales only the node groups of this
# cluster (auto-discovery tags that EKS puts on managed node groups' Auto Scaling groups).
# ---------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "cluster_autoscaler" {
  statement {
    #checkov:skip=CKV_AWS_356:Describe calls of Auto Scaling, EC2 and EKS cannot be scoped to resources.
    sid = "Discover"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
      "eks:DescribeNodegroup",
    ]
    resources = ["*"]
  }

  statement {
    sid = "ScaleOwnNodeGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${local.cluster_name}"
      values   = ["owned"]
    }
  }
}

module "irsa_cluster_autoscaler" {
  source = "../modules/eks-irsa-role"

  name              = "${local.prefix}-cluster-autoscaler"
  description       = "Cluster autoscaler of ${local.cluster_name}"
  oidc_provider_arn = aws_iam_openid_connect_provider.this.arn
  oidc_issuer_url   = aws_iam_openid_connect_provider.this.url
  namespace         = "kube-system"
  service_account   = "cluster-autoscaler"
  policy_json       = data.aws_iam_policy_document.cluster_autoscaler.json
}
