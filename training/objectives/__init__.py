"""What a run optimises: the strategies (epoch plans, batch layouts, loss calls), their
sampling and their pure loss functions."""
