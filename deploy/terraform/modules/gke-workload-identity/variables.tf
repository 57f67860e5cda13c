variable "project_id" {
  type        = string
  description = "GCP project that owns the Google service account and the cluster's workload pool."
}

variable "account_id" {
  type        = string
  description = "Google service account ID (the part before @), 6 to 30 characters."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.account_id))
    error_message = "account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "display_name" {
  type        = string
  description = "Human-readable description of the workload this identity serves."
}

variable "namespace" {
  type        = string
  description = "Kubernetes namespace of the Kubernetes service account (KSA)."

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a valid Kubernetes DNS label."
  }
}

variable "ksa_name" {
  type        = string
  description = "Name of the Kubernetes service account allowed to impersonate the Google service account."

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.ksa_name))
    error_message = "ksa_name must be a valid Kubernetes DNS label."
  }
}
