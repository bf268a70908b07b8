"""CSV import and export of products, stock levels and tax rates (django-import-export).

A file is imported whole or not at all: every row is validated with the model's own
checks (`full_clean`), and one invalid row rolls the whole file back and is reported with
its line number and the field at fault.
"""

from decimal import InvalidOperation

from django.core.exceptions import ValidationError
from import_export import fields, resources, widgets

from commerce.models import Product, StockLevel, TaxRate, Warehouse


class ByCodeWidget(widgets.ForeignKeyWidget):
    """A foreign key given by a natural key column; an unknown key is a row error that
    names the column."""

    def __init__(self, model, field: str, column: str, what: str, upper: bool = False):
        super().__init__(model, field)
        self.column, self.what, self.upper = column, what, upper

    def clean(self, value, row=None, **kwargs):
        text = str(value or "").strip()
        if not text:
            raise ValidationError({self.column: f"The {self.what} is missing."})
        if self.upper:
            text = text.upper()
        try:
            return self.get_queryset(value, row, **kwargs).get(**{self.field: text})
        except self.model.DoesNotExist:
            raise ValidationError(
                {self.column: f"No {self.what} “{text}”: create it first."}
            ) from None


class NumberWidget(widgets.DecimalWidget):
    """Decimals whose bad values are a row error on the field ("“abc” is not a number")
    rather than a bare decimal.InvalidOperation."""

    def clean(self, value, row=None, **kwargs):
        try:
            return super().clean(value, row, **kwargs)
        except (InvalidOperation, ValueError):
            raise ValueError(f"“{value}” is not a number.") from None


class AllOrNothingResource(resources.ModelResource):
    """Rolls the whole import back when any row is invalid, whoever calls it (the admin's
    confirm step included), not only on the admin's dry run."""

    # Columns whose text is normalized to upper case before validation: "de" is DE.
    upper_case_columns: tuple[str, ...] = ()

    def import_data(
        self,
        dataset,
        dry_run=False,
        raise_errors=False,
        use_transactions=None,
        collect_failed_rows=False,
        rollback_on_validation_errors=False,
        **kwargs,
    ):
        return super().import_data(
            dataset,
            dry_run=dry_run,
            raise_errors=raise_errors,
            use_transactions=True,
            collect_failed_rows=collect_failed_rows,
            rollback_on_validation_errors=True,
            **kwargs,
        )

    @classmethod
    def widget_from_django_field(cls, f, default=widgets.Widget):
        widget = super().widget_from_django_field(f, default)
        return NumberWidget if widget is widgets.DecimalWidget else widget

    def before_import_row(self, row, **kwargs):
        for column in self.upper_case_columns:
            if isinstance(row.get(column), str):
                row[column] = row[column].strip().upper()


class ProductResource(AllOrNothingResource):
    upper_case_columns = ("sku", "currency")

    class Meta:
        model = Product
        fields = ("sku", "name", "weight_kg", "price", "currency", "tax_category", "is_active")
        import_id_fields = ("sku",)
        clean_model_instances = True
        skip_unchanged = True
        use_transactions = True
        name = "Products"


class StockLevelResource(AllOrNothingResource):
    upper_case_columns = ("sku",)
    product = fields.Field(
        attribute="product",
        column_name="sku",
        widget=ByCodeWidget(Product, "sku", column="sku", what="product with SKU", upper=True),
    )
    warehouse = fields.Field(
        attribute="warehouse",
        column_name="warehouse",
        widget=ByCodeWidget(Warehouse, "code", column="warehouse", what="warehouse"),
    )

    class Meta:
        model = StockLevel
        fields = ("product", "warehouse", "on_hand", "reserved")
        import_id_fields = ("product", "warehouse")
        clean_model_instances = True
        skip_unchanged = True
        use_transactions = True
        name = "Stock levels"

    def get_queryset(self):
        return super().get_queryset().select_related("product", "warehouse")


class TaxRateResource(AllOrNothingResource):
    upper_case_columns = ("country",)

    class Meta:
        model = TaxRate
        fields = ("country", "tax_category", "rate", "valid_from", "valid_until")
        import_id_fields = ("country", "tax_category", "valid_from")
        clean_model_instances = True
        skip_unchanged = True
        use_transactions = True
        name = "Tax rates"
