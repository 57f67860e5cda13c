# ---------------------------------------------------------------------------------------------
# Continuous deployment (.github/workflows/deploy.yml), no long-lived key anywhere:
# - GitHub's OIDC tokens are trusted by IAM; only a job of var.github_repository running in the
#   GitHub environment var.github_deploy_environment can assume the deploy role;
# - the role may describe this cluster (update-kubeconfig) and copy released images into the ECR
#   repository (by digest, so the digest release.yml printed is the one that runs);
# - an EKS access entry gives it Kubernetes `edit` in var.k8s_namespace only (Deployments, Jobs,
#   Services, ConfigMaps, Secrets, NetworkPolicies, HPAs, PDBs...): not the Namespace object,
#   not RBAC, nothing cluster-wide. An administrator creates the Namespace once (docs/deploy.md);
#   Terraform creates nothing inside the cluster.
# The API endpoint is private: deploy.yml runs on a self-hosted runner inside the VPC, allowed to
# reach the endpoint from var.deploy_runner_cidrs (a runner on the cluster's nodes needs no rule).
# ---------------------------------------------------------------------------------------------

resource "aws_iam_openid_connect_provider" "github" {
  count = var.github_oidc_provider_arn == "" ? 1 : 0

  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  # IAM trusts GitHub's issuer by its root CA; the list is required by the API, not used.
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
}

locals {
  github_oidc_provider_arn = coalesce(var.github_oidc_provider_arn, one(aws_iam_openid_connect_provider.github[*].arn))
}

data "aws_iam_policy_document" "deploy_trust" {
  statement {
    sid     = "GitHubActionsDeployJob"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_repository}:environment:${var.github_deploy_environment}"]
    }
  }
}

resource "aws_iam_role" "deploy" {
  name                 = "${local.prefix}-deploy"
  description          = "deploy.yml of ${var.github_repository} (${var.github_deploy_environment}): apply to ${var.k8s_namespace}"
  assume_role_policy   = data.aws_iam_policy_document.deploy_trust.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "deploy" {
  statement {
    sid       = "Kubeconfig"
    actions   = ["eks:DescribeCluster"]
    resources = [aws_eks_cluster.this.arn]
  }

  statement {
    # ecr:GetAuthorizationToken has no resource to scope to; pushes are limited to one repository.
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "CopyReleasedImages"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [aws_ecr_repository.loopml.arn]
  }
}

resource "aws_iam_role_policy" "deploy" {
  name   = "${local.prefix}-deploy-permissions"
  role   = aws_iam_role.deploy.id
  policy = data.aws_iam_policy_document.deploy.json
}

resource "aws_eks_access_entry" "deploy" {
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_iam_role.deploy.arn
  type          = "STANDARD"
}

resource "aws_eks_access_policy_association" "deploy" {
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.deploy.principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSEditPolicy"

  access_scope {
    type       = "namespace"
    namespaces = [var.k8s_namespace]
  }
}

resource "aws_vpc_security_group_ingress_rule" "api_from_deploy_runner" {
  for_each = toset(var.deploy_runner_cidrs)

  security_group_id = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
  description       = "Kubernetes API (private endpoint) from the deploy.yml runner"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}
