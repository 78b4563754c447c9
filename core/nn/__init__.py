"""The networks (official class names and state-dict keys), the FAN, mean styles and truncation."""
