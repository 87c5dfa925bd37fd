"""Initial schema: inspections, defects, images, recipe versions, audit log, users, reviews.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 08:10:35.164958

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""

    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('before', sa.Text(), nullable=True),
    sa.Column('after', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_at', ['at'], unique=False)

    op.create_table('inspections',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('station_id', sa.String(length=64), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('part_id', sa.BigInteger(), nullable=False),
    sa.Column('triggered_at', sa.DateTime(), nullable=False),
    sa.Column('cameras', sa.String(length=255), nullable=False),
    sa.Column('recipe_name', sa.String(length=64), nullable=False),
    sa.Column('recipe_version', sa.Integer(), nullable=False),
    sa.Column('recipe_hash', sa.String(length=64), nullable=False),
    sa.Column('model_hashes', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.String(length=8), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('reject_reason', sa.String(length=32), nullable=True),
    sa.Column('plc_code', sa.Integer(), nullable=False),
    sa.Column('top_class', sa.String(length=64), nullable=True),
    sa.Column('defect_count', sa.Integer(), nullable=False),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('thresholds', sa.JSON(), nullable=False),
    sa.Column('timings_ms', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('images_dropped', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inspections'))
    )
    with op.batch_alter_table('inspections', schema=None) as batch_op:
        batch_op.create_index('ix_inspections_outcome_time', ['outcome', 'triggered_at'], unique=False)
        batch_op.create_index('ix_inspections_part_id', ['part_id'], unique=False)
        batch_op.create_index('ix_inspections_recipe_time', ['recipe_name', 'triggered_at'], unique=False)
        batch_op.create_index('ix_inspections_station_time', ['station_id', 'triggered_at'], unique=False)
        batch_op.create_index('ix_inspections_time_outcome', ['triggered_at', 'outcome'], unique=False)

    op.create_table('recipe_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recipe_versions')),
    sa.UniqueConstraint('name', 'content_hash', name=op.f('uq_recipe_versions_name_content_hash'))
    )
    with op.batch_alter_table('recipe_versions', schema=None) as batch_op:
        batch_op.create_index('ix_recipe_versions_name', ['name'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(), nullable=True),
    sa.Column('last_login_at', sa.DateTime(), nullable=True),
    sa.Column('password_changed_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('defects',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inspection_id', sa.BigInteger(), nullable=False),
    sa.Column('triggered_at', sa.DateTime(), nullable=False),
    sa.Column('view', sa.String(length=64), nullable=False),
    sa.Column('class_name', sa.String(length=64), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('x0', sa.Integer(), nullable=False),
    sa.Column('y0', sa.Integer(), nullable=False),
    sa.Column('x1', sa.Integer(), nullable=False),
    sa.Column('y1', sa.Integer(), nullable=False),
    sa.Column('area_px', sa.Integer(), nullable=False),
    sa.Column('area_mm2', sa.Float(), nullable=True),
    sa.Column('proposal_score', sa.Float(), nullable=False),
    sa.Column('zone', sa.String(length=64), nullable=True),
    sa.Column('mask_rle', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['inspection_id'], ['inspections.id'], name=op.f('fk_defects_inspection_id_inspections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_defects'))
    )
    with op.batch_alter_table('defects', schema=None) as batch_op:
        batch_op.create_index('ix_defects_class_time', ['class_name', 'triggered_at'], unique=False)
        batch_op.create_index('ix_defects_inspection_id', ['inspection_id'], unique=False)
        batch_op.create_index('ix_defects_time_class', ['triggered_at', 'class_name'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inspection_id', sa.BigInteger(), nullable=False),
    sa.Column('view', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['inspection_id'], ['inspections.id'], name=op.f('fk_images_inspection_id_inspections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('path', name=op.f('uq_images_path'))
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index('ix_images_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_images_inspection_id', ['inspection_id'], unique=False)

    op.create_table('reviews',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('inspection_id', sa.BigInteger(), nullable=False),
    sa.Column('defect_id', sa.BigInteger(), nullable=True),
    sa.Column('label', sa.String(length=16), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('reviewer', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['defect_id'], ['defects.id'], name=op.f('fk_reviews_defect_id_defects'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['inspection_id'], ['inspections.id'], name=op.f('fk_reviews_inspection_id_inspections'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reviews'))
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index('ix_reviews_inspection_id', ['inspection_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""

    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index('ix_reviews_inspection_id')

    op.drop_table('reviews')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('ix_images_inspection_id')
        batch_op.drop_index('ix_images_created_at')

    op.drop_table('images')
    with op.batch_alter_table('defects', schema=None) as batch_op:
        batch_op.drop_index('ix_defects_time_class')
        batch_op.drop_index('ix_defects_inspection_id')
        batch_op.drop_index('ix_defects_class_time')

    op.drop_table('defects')
    op.drop_table('users')
    with op.batch_alter_table('recipe_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_recipe_versions_name')

    op.drop_table('recipe_versions')
    with op.batch_alter_table('inspections', schema=None) as batch_op:
        batch_op.drop_index('ix_inspections_time_outcome')
        batch_op.drop_index('ix_inspections_station_time')
        batch_op.drop_index('ix_inspections_recipe_time')
        batch_op.drop_index('ix_inspections_part_id')
        batch_op.drop_index('ix_inspections_outcome_time')

    op.drop_table('inspections')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_at')

    op.drop_table('audit_log')

