output "role_arn" {
  description = "ARN of the IAM role."
  value       = aws_iam_role.this.arn
}

output "role_name" {
  description = "Name of the IAM role."
  value       = aws_iam_role.this.name
}

output "sa_annotations" {
  description = "Annotations to put on the Kubernetes service account."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.this.arn }
}
