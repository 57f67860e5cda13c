variable "name" {
  type        = string
  description = "Name of the IAM role."

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.name))
    error_message = "name must be a valid IAM role name (1-64 characters)."
  }
}

variable "description" {
  type        = string
  description = "What the workload assuming this role does."
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider (IRSA)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "oidc_issuer_url" {
  type        = string
  description = "Issuer URL of the cluster's OIDC provider, with or without https://."
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the service account allowed to assume the role."

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a valid Kubernetes DNS label."
  }
}

variable "service_account" {
  type        = string
  description = "Name of the Kubernetes service account allowed to assume the role."

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.service_account))
    error_message = "service_account must be a valid Kubernetes DNS label."
  }
}

variable "policy_json" {
  type        = string
  description = "Identity policy (JSON) attached inline: the only permissions the workload gets."
}

variable "tags" {
  type        = map(string)
  description = "Tags applied to the role."
  default     = {}
}
