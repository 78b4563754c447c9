"""The networks (official class names and state-dict keys), the FAN, and style codes: mean
styles, truncation, the style-strength rules."""
