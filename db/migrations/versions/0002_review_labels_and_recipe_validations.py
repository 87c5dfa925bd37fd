"""Review labels and recipe validations (issue 22): part_labels, label_regions, recipe_validations.

part_labels: a quality engineer's label of an inspected part (the true verdict, who, when,
which recipe version and models saw it, which SAM pair outlined it); label_regions: the
defects outlined on it (class, box, RLE mask); recipe_validations: a candidate recipe version
replayed on reviewed parts next to the active one. REVIEW verdicts need no schema change: the
inspections.outcome column holds "review" (String(8)). Only tables are added: the downgrade
drops them and loses nothing else.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 20:21:13.497498

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('recipe_validations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('candidate_version', sa.Integer(), nullable=False),
    sa.Column('candidate_hash', sa.String(length=64), nullable=False),
    sa.Column('baseline_version', sa.Integer(), nullable=True),
    sa.Column('baseline_hash', sa.String(length=64), nullable=True),
    sa.Column('parts', sa.Integer(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recipe_validations'))
    )
    with op.batch_alter_table('recipe_validations', schema=None) as batch_op:
        batch_op.create_index('ix_recipe_validations_name_at', ['name', 'at'], unique=False)

    op.create_table('part_labels',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inspection_id', sa.BigInteger(), nullable=False),
    sa.Column('verdict', sa.String(length=8), nullable=False),
    sa.Column('station_outcome', sa.String(length=8), nullable=False),
    sa.Column('reviewer', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('recipe_name', sa.String(length=64), nullable=False),
    sa.Column('recipe_version', sa.Integer(), nullable=False),
    sa.Column('recipe_hash', sa.String(length=64), nullable=False),
    sa.Column('model_hashes', sa.JSON(), nullable=False),
    sa.Column('sam_model', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['inspection_id'], ['inspections.id'], name=op.f('fk_part_labels_inspection_id_inspections'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_part_labels'))
    )
    with op.batch_alter_table('part_labels', schema=None) as batch_op:
        batch_op.create_index('ix_part_labels_at', ['at'], unique=False)
        batch_op.create_index('ix_part_labels_inspection_id', ['inspection_id'], unique=False)

    op.create_table('label_regions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('label_id', sa.BigInteger(), nullable=False),
    sa.Column('view', sa.String(length=64), nullable=False),
    sa.Column('class_name', sa.String(length=64), nullable=False),
    sa.Column('x0', sa.Integer(), nullable=False),
    sa.Column('y0', sa.Integer(), nullable=False),
    sa.Column('x1', sa.Integer(), nullable=False),
    sa.Column('y1', sa.Integer(), nullable=False),
    sa.Column('mask_rle', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['label_id'], ['part_labels.id'], name=op.f('fk_label_regions_label_id_part_labels'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_regions'))
    )
    with op.batch_alter_table('label_regions', schema=None) as batch_op:
        batch_op.create_index('ix_label_regions_label_id', ['label_id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('label_regions', schema=None) as batch_op:
        batch_op.drop_index('ix_label_regions_label_id')

    op.drop_table('label_regions')
    with op.batch_alter_table('part_labels', schema=None) as batch_op:
        batch_op.drop_index('ix_part_labels_inspection_id')
        batch_op.drop_index('ix_part_labels_at')

    op.drop_table('part_labels')
    with op.batch_alter_table('recipe_validations', schema=None) as batch_op:
        batch_op.drop_index('ix_recipe_validations_name_at')

    op.drop_table('recipe_validations')
