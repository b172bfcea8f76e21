"""The three products the shop sells. The migration and `flask seed` load these rows.

`stock` is the opening stock: `flask seed` sets it for new products only, never resets it.
"""

CATALOG: list[dict] = [
    {
        "slug": "field-notebook",
        "name": "Field Notebook",
        "description": "A5 dot-grid notebook, 120 pages of heavy 100 gsm paper that lies flat.",
        "image": "field-notebook.svg",
        "unit_amount": 1800,
        "position": 1,
        "active": True,
        "stock": 100,
    },
    {
        "slug": "enamel-mug",
        "name": "Enamel Mug",
        "description": "350 ml steel mug with a chip-resistant enamel coat, for desk or campfire.",
        "image": "enamel-mug.svg",
        "unit_amount": 2400,
        "position": 2,
        "active": True,
        "stock": 100,
    },
    {
        "slug": "canvas-tote",
        "name": "Canvas Tote",
        "description": "Heavyweight organic cotton tote with an inside pocket and long handles.",
        "image": "canvas-tote.svg",
        "unit_amount": 3200,
        "position": 3,
        "active": True,
        "stock": 100,
    },
]
