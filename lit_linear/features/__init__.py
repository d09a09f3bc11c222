"""What a linear classifier reads: the course's pixel features, and the deployed classifier that holds them."""
