"""The policy-enforcement consumer: decides every submitted directive, records every verdict."""
